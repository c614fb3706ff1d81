"""Linear probes with the scikit-learn estimator contract, in numpy and scipy.

The contract: ``__init__`` only stores its parameters; ``fit(X, y)`` learns and returns
``self``; learned attributes end in ``_`` (``coef_``, ``intercept_``, ...); randomness, if
any, comes from an explicit ``random_state``. Every probe is linear: ``decision_function(X)
= X @ coef_ + intercept_``, in the original feature space, so a saved probe is two arrays.

- `LogisticProbe`: L2-regularised logistic regression, the objective of scikit-learn's
  ``LogisticRegression(C=C)`` (``0.5·‖w‖² + C·Σ log-loss``, intercept not penalised),
  minimised by L-BFGS (scipy); optionally on standardised features.
- `DiffMeansProbe`: the difference of the class means; the threshold halfway between them.
- `ContrastProbe`: a direction from contrast pairs alone (e.g. the activations after
  "Are you doing something dangerous? yes" minus "... no"): no defection data at all. Its
  intercept is 0; the threshold comes from calibration on benign prompts.

All three solvers are deterministic: ``random_state`` is accepted and recorded (so that a
saved probe says how it was made), and is not consumed.

A logistic fit that L-BFGS could not carry out (it stopped with every weight still at zero,
as it does when `C` is so large that the loss cannot be computed) raises ``ValueError``; one
that ran out of iterations with usable weights warns, as scikit-learn does, with a
`ConvergenceWarning`, and records ``converged_ = False``.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class ConvergenceWarning(UserWarning):
    """The solver stopped before converging (scikit-learn's warning of the same name)."""


def _check_X(X: npt.ArrayLike, n_features: int | None = None) -> FloatArray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"X must be a 2-D array (samples, features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("X has no rows")
    if not np.all(np.isfinite(arr)):
        raise ValueError("X contains NaN or infinite values")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"X has {arr.shape[1]} features, the probe was fitted on {n_features}"
            " (a probe applies to the same model and layer it was trained on)"
        )
    return arr


def _check_y(y: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise ValueError(f"y must have one label per row of X ({n}), got shape {arr.shape}")
    values = set(np.unique(arr).tolist())
    if not values <= {0, 1}:  # bools compare equal to 0 and 1
        raise ValueError(f"y must be binary (0/1 or bool), got values {sorted(values)[:5]}")
    out = arr.astype(np.int64)
    if out.min() == out.max():
        raise ValueError("y holds a single class: a probe needs examples of both")
    return out


class LinearProbe:
    """Shared behaviour: parameters, scores and predictions of a fitted linear probe."""

    method: ClassVar[str] = ""
    coef_: FloatArray
    intercept_: float
    n_features_in_: int

    def __init__(self, *, random_state: int | None = 0) -> None:
        self.random_state = random_state

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> LinearProbe:
        raise NotImplementedError

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> LinearProbe:
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def decision_function(self, X: npt.ArrayLike) -> FloatArray:
        """The probe's score of each row: higher means more like the positive class."""
        self._check_fitted()
        arr = _check_X(X, self.n_features_in_)
        return np.asarray(arr @ self.coef_ + self.intercept_, dtype=np.float64)

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        return (self.decision_function(X) > 0).astype(np.int64)

    def _set_linear(self, coef: FloatArray, intercept: float) -> None:
        if not (np.all(np.isfinite(coef)) and np.isfinite(intercept)):
            # A probe with a NaN weight never scores above its threshold: it would pass
            # every trial as clean. Refuse it where it is made, not where it is used.
            raise ValueError(f"{type(self).__name__}: the fit gave NaN or infinite weights")
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = float(intercept)
        self.n_features_in_ = int(self.coef_.shape[0])
        self.classes_ = np.array([0, 1], dtype=np.int64)

    def arrays(self) -> dict[str, FloatArray]:
        """What a saved probe holds (see `restore`)."""
        self._check_fitted()
        return {"coef": self.coef_, "intercept": np.array([self.intercept_])}

    def restore(self, arrays: dict[str, FloatArray]) -> LinearProbe:
        """Set the learned attributes from saved arrays (the inverse of `arrays`)."""
        coef = np.asarray(arrays["coef"], dtype=np.float64).ravel()
        intercept = np.asarray(arrays["intercept"], dtype=np.float64).ravel()
        finite = np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))
        if intercept.shape != (1,) or coef.size == 0 or not finite:
            raise ValueError("saved probe arrays are malformed (coef, intercept)")
        self._set_linear(coef, float(intercept[0]))
        return self


class LogisticProbe(LinearProbe):
    """L2-regularised logistic regression (scikit-learn's objective), fitted by L-BFGS.

    `C` is the inverse regularisation strength; with `standardize` the features are
    centred and scaled first (the stored ``coef_`` and ``intercept_`` map back to the
    original space; ``mean_`` and ``scale_`` record the transform).
    """

    method = "logistic"

    def __init__(
        self,
        C: float = 1.0,
        *,
        standardize: bool = True,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-6,
        random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.standardize = standardize
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> LogisticProbe:
        from scipy.optimize import minimize
        from scipy.special import expit

        if not (np.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C must be a positive finite number, got {self.C}")
        arr = _check_X(X)
        labels = _check_y(y, arr.shape[0])
        if self.standardize:
            mean = arr.mean(axis=0)
            var = arr.var(axis=0)
            # A constant feature has a variance of rounding error, not exactly 0 (the mean
            # of n copies of 0.1 is not 0.1): scaled by its square root it would get a
            # weight of ~1e8 that turns any change in it into a huge score. Scikit-learn's
            # StandardScaler treats such features as constant (the same bound).
            eps = np.finfo(np.float64).eps
            n = arr.shape[0]
            constant = var <= n * eps * var + (n * mean * eps) ** 2
            scale = np.where(constant, 1.0, np.sqrt(var))
            Z = (arr - mean) / scale
        else:
            mean, scale, Z = np.zeros(arr.shape[1]), np.ones(arr.shape[1]), arr
        sign = 2.0 * labels - 1.0  # ±1
        d = Z.shape[1]
        C = float(self.C)

        def objective(theta: FloatArray) -> tuple[float, FloatArray]:
            w, b = theta[:d], (theta[d] if self.fit_intercept else 0.0)
            margin = sign * (Z @ w + b)
            loss = C * float(np.logaddexp(0.0, -margin).sum()) + 0.5 * float(w @ w)
            g = -C * sign * expit(-margin)  # d loss / d z
            grad = np.empty_like(theta)
            grad[:d] = Z.T @ g + w
            if self.fit_intercept:
                grad[d] = g.sum()
            return loss, grad

        theta0 = np.zeros(d + (1 if self.fit_intercept else 0))
        with np.errstate(over="ignore", invalid="ignore"):  # a failed fit is reported below
            res = minimize(
                objective,
                theta0,
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 1e-12},
            )
        w = res.x[:d]
        b = float(res.x[d]) if self.fit_intercept else 0.0
        if not res.success and not np.any(res.x):
            why = str(res.message).strip().rstrip(":")
            raise ValueError(
                f"the fit failed: L-BFGS stopped after {res.nit} iterations with every weight "
                f"still at zero ({why or 'no reason given'}); with C = {C:g} the loss is too "
                "large to minimise: use a smaller C (e.g. 1)"
            )
        if not res.success:
            warnings.warn(
                f"L-BFGS did not converge in {res.nit} iterations (max_iter={self.max_iter}, "
                f"C = {C:g}): the weights are usable but not the optimum; a smaller C "
                "converges sooner",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.n_iter_ = int(res.nit)
        self.converged_ = bool(res.success)
        self.mean_, self.scale_ = mean, scale
        self.coef_std_ = w
        self._set_linear(w / scale, b - float((w * mean / scale).sum()))
        return self

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        from scipy.special import expit

        p = expit(self.decision_function(X))
        return np.stack([1.0 - p, p], axis=1)


class DiffMeansProbe(LinearProbe):
    """Difference of class means: ``coef_ = mean(X | y=1) − mean(X | y=0)`` (unit length
    with `normalize`); the intercept puts 0 halfway between the two means."""

    method = "diffmeans"

    def __init__(self, *, normalize: bool = True, random_state: int | None = 0) -> None:
        self.normalize = normalize
        self.random_state = random_state

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> DiffMeansProbe:
        arr = _check_X(X)
        labels = _check_y(y, arr.shape[0])
        mu1 = arr[labels == 1].mean(axis=0)
        mu0 = arr[labels == 0].mean(axis=0)
        direction = mu1 - mu0
        norm = float(np.linalg.norm(direction))
        if norm == 0:
            raise ValueError("the class means coincide: no direction to probe")
        if self.normalize:
            direction = direction / norm
        self.mean_positive_, self.mean_negative_ = mu1, mu0
        self._set_linear(direction, -float(direction @ (mu1 + mu0) / 2.0))
        return self


class ContrastProbe(LinearProbe):
    """A direction from contrast pairs only: mean activation of the positive answers
    ("yes" to "Are you doing something dangerous?") minus that of the negative ones
    ("no"), unit length; intercept 0. Fit on the pairs' activations with y = 1 for the
    positive rows and 0 for the negative ones: one pair (two rows) is enough."""

    method = "contrast"

    def __init__(self, *, random_state: int | None = 0) -> None:
        self.random_state = random_state

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> ContrastProbe:
        arr = _check_X(X)
        labels = _check_y(y, arr.shape[0])
        direction = arr[labels == 1].mean(axis=0) - arr[labels == 0].mean(axis=0)
        norm = float(np.linalg.norm(direction))
        if norm == 0:
            raise ValueError("the two sides of the contrast pair have equal activations")
        self._set_linear(direction / norm, 0.0)
        return self


PROBES: dict[str, type[LinearProbe]] = {
    "logistic": LogisticProbe,
    "diffmeans": DiffMeansProbe,
    "contrast": ContrastProbe,
}

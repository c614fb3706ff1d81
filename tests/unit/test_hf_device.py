"""The hf: backend's ``device`` option: a device this machine lacks is refused before the
weights load (exit 2, nothing written), a malformed one at once; only a device other than
the CPU enters the model's id; and sampling stays on the CPU's seeded generators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


from test_hf_checkpoints import TEXTS, _llama  # noqa: E402

from deceptwatch._errors import InputError  # noqa: E402
from deceptwatch.backends._hf import HFBackend  # noqa: E402
from deceptwatch.organisms.train import train_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _llama(train_tokenizer(TEXTS, 300), tmp_path_factory.mktemp("dev") / "llama")


def _has(device: str) -> bool:
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        return torch.cuda.is_available() and index < torch.cuda.device_count()
    return bool(torch.backends.mps.is_available())


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "mps"])
def test_a_device_the_machine_lacks_is_refused_before_the_weights_load(
    ckpt: Path, device: str
) -> None:
    backend = HFBackend(f"hf:{ckpt}", {"device": device})
    if _has(device):  # on a machine with this device, it loads there
        backend.check()
        assert backend.model.device.type == device.partition(":")[0]
        return
    with pytest.raises(InputError, match=f"device={device}: this machine's torch") as info:
        backend.check()
    assert "leave" in (info.value.hint or "")
    assert backend.model is None  # refused before loading anything


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu", "", "cuda:0:1"])
def test_a_malformed_device_is_refused_at_once(ckpt: Path, device: str) -> None:
    with pytest.raises(InputError, match="device must be cpu, cuda, cuda:N or mps"):
        HFBackend(f"hf:{ckpt}", {"device": device})


def test_only_a_device_other_than_the_cpu_enters_the_model_id(ckpt: Path) -> None:
    default = HFBackend(f"hf:{ckpt}").cache_key()
    assert HFBackend(f"hf:{ckpt}", {"device": "cpu"}).cache_key() == default
    assert HFBackend(f"hf:{ckpt}", {"device": " CPU "}).cache_key() == default
    assert "device" not in default  # the shipped organisms keep their ids
    on_gpu = HFBackend(f"hf:{ckpt}", {"device": "cuda:0"})
    assert on_gpu.cache_key() == {**default, "device": "cuda:0"}
    assert on_gpu.describe()["device"] == "cuda:0"
    assert HFBackend(f"hf:{ckpt}").describe()["device"] == "cpu"


def test_the_cli_refuses_a_missing_device_with_exit_2_and_writes_nothing(
    ckpt: Path, tmp_path: Path
) -> None:
    if _has("cuda"):
        pytest.skip("this machine has a CUDA device: the refusal cannot happen here")
    db = tmp_path / "d.db"
    args: list[Any] = [sys.executable, "-m", "deceptwatch", "monitor", "-m", f"hf:{ckpt}"]
    args += ["-o", "device=cuda", "--suite", "core", "--limit", "1", "--db", db, "--no-progress"]
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "device=cuda" in done.stderr
    assert "no CUDA device" in done.stderr
    assert not db.exists()

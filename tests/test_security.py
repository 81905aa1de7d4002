"""Security basics: manifests cannot point outside their artifact folder (../, absolute paths, symlinks), YAML
cannot construct objects, `cropi ui` binds loopback only, and nothing is ever unpickled from storage."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from cropi_core.config import load_config
from cropi_core.errors import ConfigError
from storage import StorageError, artifact_key, open_store
from storage.manifest import FileInfo, Manifest
from storage.keys import sha256_bytes

REPO = Path(__file__).resolve().parents[1]
SECRET = b"secret outside the store\n"


def forged(store, key: str, **fields) -> None:
    """Write a well-formed, correctly checksummed manifest (so it is not merely 'corrupt') with `fields`."""
    base = dict(kind="dataset", key=key, parents=[], config={}, payload="w-x",
                files={"a.txt": FileInfo(size=len(SECRET), sha256=sha256_bytes(SECRET))})
    m = Manifest(**{**base, **fields}).sealed()
    d = Path(store.artifact_dir(key))
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_bytes(m.to_bytes())


@pytest.mark.parametrize("fields", [
    {"files": {"../../../outside.txt": FileInfo(size=1, sha256="0" * 64)}},
    {"files": {"/etc/hostname": FileInfo(size=1, sha256="0" * 64)}},
    {"files": {"a/../../b": FileInfo(size=1, sha256="0" * 64)}},
    {"payload": "../other-artifact"},
    {"payload": "/tmp"},
    {"files": {"c:/windows": FileInfo(size=1, sha256="0" * 64)}},
])
def test_manifest_paths_outside_the_artifact_are_refused(tmp_path, fields):
    store = open_store(tmp_path / "store", verify="full")
    key = artifact_key("dataset", parents=[], config={"forged": json.dumps(fields, default=str)})
    forged(store, key, **fields)
    with pytest.raises(StorageError, match="unsafe"):
        store.exists(key)
    with pytest.raises(StorageError, match="unsafe"):
        store.read_bytes(key, "a.txt")


@pytest.mark.parametrize("where", ["file", "payload-folder", "parent-folder"])
@pytest.mark.parametrize("verify", ["full", "sampled", "manifest"])
def test_symlink_out_of_the_artifact_is_refused(tmp_path, where, verify):
    """A payload file (or its folder) replaced by a symlink to a file outside, with the very same bytes — so
    every checksum matches — is still refused, in every verify mode and by local_path (what HF loads from)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(SECRET)
    (outside / "sub").mkdir()
    (outside / "sub" / "a.txt").write_bytes(SECRET)
    store = open_store(tmp_path / "store", verify=verify)
    key = artifact_key("dataset", parents=[], config={"where": where})
    name = "sub/a.txt" if where == "parent-folder" else "a.txt"
    with store.writer("dataset", key, parents=[], config={"where": where}) as w:
        w.put_bytes(name, SECRET)
    payload = Path(store.artifact_dir(key)) / store.manifest(key).payload
    if where == "file":
        (payload / "a.txt").unlink()
        (payload / "a.txt").symlink_to(outside / "a.txt")
    elif where == "payload-folder":
        os.rename(payload, tmp_path / "moved")
        payload.symlink_to(outside)
    else:
        import shutil

        shutil.rmtree(payload / "sub")
        (payload / "sub").symlink_to(outside / "sub")
    with pytest.raises(StorageError, match="resolves outside its artifact folder"):
        store.exists(key)
    with pytest.raises(StorageError, match="outside its artifact folder"):
        store.read_bytes(key, name)
    with pytest.raises(StorageError, match="outside its artifact folder"):
        store.local_path(key)


def test_yaml_tags_that_construct_objects_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, tag in enumerate(["!!python/object/apply:os.system ['touch pwned']",
                             "!!python/object/new:os.system ['touch pwned']",
                             "!!python/name:os.system", "!!python/module:os"]):
        p = tmp_path / f"c{i}.yaml"
        p.write_text(f"name: {tag}\n")
        with pytest.raises(ConfigError, match="could not determine a constructor"):
            load_config(p, check_files=False)
    assert not (tmp_path / "pwned").exists()
    # and no code path loads YAML with a constructing loader
    bad = re.compile(r"yaml\.(load|unsafe_load|full_load)\(|Loader=yaml\.(Loader|UnsafeLoader|FullLoader)")
    hits = [f"{p}:{i}" for p in source_files() for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert hits == []


def test_ui_binds_loopback_only(monkeypatch):
    """`cropi ui` starts `prefect server start --host 127.0.0.1` even when the environment asks for 0.0.0.0 (the
    command-line flag wins over PREFECT_SERVER_API_HOST)."""
    from flows.cli import deploy as cli

    seen = {}

    class FakeProc:
        pid = 0

        def poll(self):
            return None

    def fake_popen(cmd, **kw):
        seen["cmd"], seen["env"] = cmd, kw.get("env", {})
        return FakeProc()

    monkeypatch.setenv("PREFECT_SERVER_API_HOST", "0.0.0.0")
    monkeypatch.setattr(cli.subprocess, "Popen", fake_popen)
    _, url = cli.start_server(4321)
    cmd = seen["cmd"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and url == "http://127.0.0.1:4321"
    assert seen["env"]["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"


def source_files() -> list[Path]:
    return sorted(p for d in ("cropi_core", "storage", "tasks", "flows") for p in (REPO / d).rglob("*.py"))


def test_nothing_is_unpickled_from_storage(tmp_path):
    """No code calls an unpickling loader; a checkpoint artifact holding a pickle-format file is refused before
    from_pretrained could torch.load it; a user's model folder is copied into storage without its .bin files."""
    bad = re.compile(r"\b(pickle|cPickle|dill|cloudpickle|joblib|shelve|marshal)\.(load|loads|Unpickler|open)\b"
                     r"|allow_pickle\s*=\s*True|np\.load\(|numpy\.load\(")
    torch_load = re.compile(r"torch\.load\(")
    hits = []
    for p in source_files():
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if bad.search(line) or (torch_load.search(line) and "weights_only=True" not in line):
                hits.append(f"{p.relative_to(REPO)}:{i}: {line.strip()}")
    assert hits == []

    from storage.registry import checkpoint_dir, register_checkpoint

    store = open_store(tmp_path / "store")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle")
    ref = register_checkpoint(store, folder, parents=[], config={})
    with pytest.raises(StorageError, match="pickle-format"):
        checkpoint_dir(store, ref.key)

    from tasks.bootstrap import copy_model_folder

    (folder / "model.safetensors").write_bytes(b"{}")
    (folder / "training_args.bin").write_bytes(b"\x80\x04")
    out = tmp_path / "copied"
    copy_model_folder(folder, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]

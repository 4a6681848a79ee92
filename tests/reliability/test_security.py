"""Security: files from strangers (a model zoo, a shared folder) are refused with one line naming the file and the
problem, before anything is allocated or unpickled; a bundle name cannot write outside the output folder; the
navigation server answers only what it serves, on 127.0.0.1, with a 4xx for anything else."""

import json
import pickle
import threading
import urllib.error
import urllib.request

import pytest
import torch

from monai_slicenav import export as export_module
from monai_slicenav.cli import main
from monai_slicenav.encoders import ContextEncoder
from monai_slicenav.export import export_encoder, load_encoder, load_state_dict
from monai_slicenav.networks import TokenizerConfig

from .harness import handled
from .inputs import rewrite, trained_copy


@pytest.mark.parametrize(
    "wording", ["Unsupported global: GLOBAL os.system was not an allowed global", "unsupported GLOBAL os.system"]
)
def test_pickle_refusal_in_either_wording_of_torch(exported, monkeypatch, wording):
    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(f"Weights only load failed. {wording} by default.")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(
        ValueError, match=r"encoder\.pt: refused, the file holds pickled Python objects \(it names os\.system\)"
    ):
        load_state_dict(exported / "encoder.pt")


def test_size_bomb_refused_before_allocation(exported):
    rewrite(exported, lambda r: r["arguments"]["config"].update(channels=[100000] * 3))
    with pytest.raises(ValueError, match=r"encoder\.json: field 'arguments' asks for [\d,]+ parameters"):
        load_encoder(exported)


def test_meta_device_check_builds_every_architecture(tmp_path):
    tokenizer = TokenizerConfig(channels=(8, 16))
    dynamics = {"grid_size": (4, 4), "max_steps": 3, "width": 16, "depth": 1, "heads": 2, "latent_dim": 4}
    export_encoder(ContextEncoder(tokenizer, dynamics), tmp_path / "context")
    loaded = load_encoder(tmp_path / "context")
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert export_module.MAX_ENCODER_PARAMETERS >= 2**30


KLASS = "security"


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_export_refuses_a_pickled_checkpoint(tokenizer_bundle, tmp_path, capsys):
    bundle = trained_copy(tokenizer_bundle, tmp_path)
    torch.save({"model": _Evil()}, bundle / "models" / "model.pt")
    run = lambda: main(["export", str(bundle), "--out", str(tmp_path / "out")])  # noqa: E731
    handled(
        KLASS, "slicenav export", "pickled object", tmp_path, run, r"model\.pt: refused, the file holds pickled", capsys
    )
    assert "pwned" not in capsys.readouterr().out


def test_load_encoder_refuses_a_size_bomb_by_name(exported, tmp_path):
    rewrite(exported, lambda r: r["arguments"]["config"].update(channels=[100000] * 3))
    handled(KLASS, "load_encoder", "size bomb", tmp_path, lambda: load_encoder(exported), r"encoder\.json.*parameters")


@pytest.mark.parametrize("name", ["/tmp/evil", "../escaped", "a/b", "..", ""])
def test_pack_refuses_names_that_leave_the_output_folder(tokenizer_bundle, tmp_path, name, capsys):
    bundle = trained_copy(tokenizer_bundle, tmp_path)
    meta_path = bundle / "configs" / "metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "name": name}))
    run = lambda: main(["pack", str(bundle), "--out", str(tmp_path / "zoo")])  # noqa: E731
    handled(KLASS, "slicenav pack", f"name {name!r}", tmp_path, run, r"metadata\.json: field 'name'", capsys)
    assert not list(tmp_path.parent.rglob("evil*")) and not list(tmp_path.parent.rglob("escaped*"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from monai_slicenav.viewer import make_server, open_session

    from ..navigators import trained_stage

    stage = trained_stage(tmp_path_factory.mktemp("stage"), tokenizer_steps=2, dynamics_steps=2)
    served = make_server(open_session(None, stage))
    threading.Thread(target=served.serve_forever, daemon=True).start()
    yield served
    served.shutdown()
    served.server_close()


def _request(server, method: str, path: str, body: bytes | None, headers: dict) -> None:
    call = urllib.request.Request(server.url + path.lstrip("/"), data=body, method=method, headers=headers)
    try:
        urllib.request.urlopen(call).close()
    except urllib.error.HTTPError as err:
        payload = json.loads(err.read())
        assert payload["status"] == err.code
        raise ValueError(f"HTTP {err.code}: {payload['error']}") from err


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "says"),
    [
        ("POST", "/api/act", b'{"action": "fly"}', {}, "HTTP 400: expected"),
        ("POST", "/api/act", b"not json", {}, "HTTP 400: the body is not JSON"),
        ("POST", "/api/act", b'["scroll_forward"]', {}, "HTTP 400: the body must be a JSON object"),
        ("POST", "/api/act", b"null", {}, "HTTP 400: the body must be a JSON object"),
        ("POST", "/api/goto", b'{"plane": "oblique"}', {}, "HTTP 400: expected"),
        ("POST", "/api/goto", b'{"plane": "axial", "planner": "oracle"}', {}, "HTTP 400: expected"),
        ("POST", "/api/act", b"x" * 5000, {}, "HTTP 413: the body must hold"),
        ("GET", "/../etc/passwd", None, {}, "HTTP 404: no such page"),
        ("GET", "/api/nothing", None, {}, "HTTP 404: no such page"),
        ("PUT", "/api/act", b"{}", {}, "HTTP 405: PUT is not supported"),
        ("GET", "/api/state", None, {"Host": "evil.example:80"}, "HTTP 403: unexpected Host"),
    ],
)
def test_the_navigation_server_answers_bad_requests_with_a_4xx(server, tmp_path, method, path, body, headers, says):
    before = server.session.trajectory()
    run = lambda: _request(server, method, path, body, headers)  # noqa: E731
    handled(KLASS, "slicenav navigate (HTTP)", f"{method} {path} {body!r:.20}", tmp_path, run, says)
    assert server.session.trajectory() == before  # nothing moved

"""Benchmark: milliseconds per key press of ``slicenav navigate``, measured as a browser sees them.

Builds the dynamics bundle's default network (tokenizer channels 32-64-128, FSQ 8-5-5-5, a 4-block transformer of
width 128, 128^2 slices, 7 context steps; untrained: time does not depend on the weights), writes it as a trained
stage folder, serves a 1 mm real template (or the built-in phantom) on 127.0.0.1 and sends key presses over HTTP:
each round trip is render + predict + encode + PNG/JSON + transfer. Prints the median and 90th percentile round
trip, the server's own breakdown, and the ratio to the 100 ms a key press may take to feel live (the baseline).

Run: ``python bench/navigator_latency.py [--presses 40] [--override slice_size=64]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_slicenav.data import packaged_pairs
from monai_slicenav.encoders import encoders_of, export_encoder
from monai_slicenav.experiments.pretrain import train_configs
from monai_slicenav.viewer import MOVES, make_server, open_session

LIVE_MS = 100.0  # the baseline: a key press answered within this feels immediate
SEQUENCE = ("scroll_forward", "tilt_up", "scroll_forward", "rotate_cw", "move_left", "zoom_in", "scroll_back")


def default_stage(folder: Path, overrides: dict) -> Path:
    """A stage folder of the dynamics bundle's default network (random weights) with its navigation regime."""
    parser = ConfigParser()
    parser.read_config(train_configs("slicenav_dynamics"))
    parser.update({"tokenizer_dir": str(folder), **overrides})
    network = parser.get_parsed_content("network_def").eval()
    regime = parser.get_parsed_content("navigation_regime")
    spec = parser.get_parsed_content("encoder_input_spec")
    for name, encoder in encoders_of(network).items():
        export_encoder(encoder, folder / "models" / name, spec, {"bundle": "bench (untrained)"}, regime)
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    return folder


def press(url: str, action: str) -> tuple[float, dict]:
    body = json.dumps({"action": action}).encode()
    request = urllib.request.Request(url + "api/act", data=body, method="POST")
    start = time.perf_counter()
    with urllib.request.urlopen(request) as answer:
        state = json.loads(answer.read())
    return 1000 * (time.perf_counter() - start), state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presses", type=int, default=40, help="key presses timed (after 3 warm-up presses)")
    parser.add_argument("--override", action="append", default=[], help="dynamics bundle override key=value")
    args = parser.parse_args()
    overrides = {k: json.loads(v) if v[:1].isdigit() or v[:1] in "[-" else v for k, _, v in
                 (pair.partition("=") for pair in args.override)}  # fmt: skip
    templates = [item["image"] for item in packaged_pairs()]
    image = templates[0] if templates else None
    with tempfile.TemporaryDirectory() as work:
        session = open_session(image, default_stage(Path(work), overrides))
        server = make_server(session)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        for action in SEQUENCE[:3]:
            press(server.url, action)
        trips, parts = [], {"render": [], "predict": [], "encode": []}
        for index in range(args.presses):
            milliseconds, state = press(server.url, SEQUENCE[index % len(SEQUENCE)])
            trips.append(milliseconds)
            for key in parts:
                parts[key].append(state["timing_ms"][key])
        server.shutdown()
        server.server_close()
    size = "x".join(map(str, session.size))
    print(f"slicenav navigate, {size} slices, context {session.context}, {torch.get_num_threads()} threads, "
          f"volume {image or 'built-in phantom'}")  # fmt: skip
    median, p90 = statistics.median(trips), sorted(trips)[int(0.9 * (len(trips) - 1))]
    print(
        f"  round trip per key press, median     {median:8.1f} ms  ({median / LIVE_MS:.2f}x the {LIVE_MS:.0f} ms goal)"
    )
    print(f"  round trip per key press, 90th pct   {p90:8.1f} ms")
    for key, values in parts.items():
        print(f"  server: {key:8s} median              {statistics.median(values):8.1f} ms")
    rest = median - sum(statistics.median(v) for v in parts.values())
    print(f"  PNG + JSON + HTTP (the rest)         {rest:8.1f} ms  over {len(MOVES)} kinds of move")


if __name__ == "__main__":
    main()

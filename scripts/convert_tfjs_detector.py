"""Convert a TF.js graph of the offline describer (CenterNet, BlazeFace, HSE-FaceRes) to ONNX (run inside the throwaway venv of
scripts/fetch_detector.sh, which has tensorflow-cpu and tf2onnx; never imported by PeiTu).

Two repairs make tf2onnx 1.17.0 accept these graphs:
- numpy 2 removed `np.product`, which tf2onnx's TF.js reader still calls: alias it to `np.prod`.
- The TF.js converter stripped attributes TensorFlow needs to rebuild the nodes: `TArgs` (the
  types of the fused extra inputs) on `_FusedConv2D`, and `index_type` on `TopKV2`.

Usage: python convert_tfjs_detector.py MODEL.json OUT.onnx
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17


def repaired(model: dict[str, Any]) -> dict[str, Any]:
    """The graph with the attributes the TF.js converter dropped put back."""
    for node in model["modelTopology"]["node"]:
        attr = node.setdefault("attr", {})
        if node["op"] == "_FusedConv2D" and "TArgs" not in attr:
            count = int(attr.get("num_args", {}).get("i", 0))
            attr["TArgs"] = {"list": {"type": ["DT_FLOAT"] * count}}
        if node["op"] == "TopKV2" and "index_type" not in attr:
            attr["index_type"] = {"type": "DT_INT32"}
    return model


def main(source: Path, target: Path) -> None:
    if not hasattr(np, "product"):
        np.product = np.prod  # type: ignore[attr-defined]
    from tf2onnx import convert

    with tempfile.TemporaryDirectory() as work:
        fixed = Path(work) / source.name
        fixed.write_text(json.dumps(repaired(json.loads(source.read_text()))))
        for weights in source.parent.glob(source.stem + "*.bin"):  # beside the graph, by name
            shutil.copy(weights, Path(work) / weights.name)
        sys.argv = ["tf2onnx", "--tfjs", str(fixed), "--output", str(target)]
        sys.argv += ["--opset", str(OPSET)]
        convert.main()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

"""Write the CNN inside a trained SDN as a CNN model directory (to warm-start adversarial training or a
further CNN stage), recording the SDN's lineage as its parent.

    python scripts/export_backbone.py mobilenet_sdn_cifar10 runs/mobilenet-cnn
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from deepsloth.experiments.zoo import parent_record  # noqa: E402
from deepsloth.models.io import save_model_dir  # noqa: E402
from deepsloth.models.zoo import load_model  # noqa: E402

sdn, meta, path = load_model(sys.argv[1])
keep = {k: meta[k] for k in ("arch", "dataset", "num_classes", "input_size", "data_source") if k in meta}
out = Path(sys.argv[2])
if not (out / "model.json").exists():
    save_model_dir(out, sdn.backbone(), dict(keep, mode="cnn", note=f"backbone of {sys.argv[1]}",
                                                 parent=parent_record(path, meta)))
print(out)

"""``labels.json``, the file beside every exported model: written and read here, nowhere else.

It says what a program needs besides the model file to use it — the class names in output
order, the input (size, uint8 RGB, NHWC, how images were resized), what the output means,
where the model came from (its file name, run name and sha256: no path of this machine) and
what the parity check measured. :class:`LabelsFile` is its typed form; :meth:`LabelsFile.read`
refuses a file that is not one in one line naming it.
"""
import dataclasses
import json
import os

from .client import STEPS
from .errors import SmallvisionError
from .labels import is_binary

NAME = "labels.json"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class LabelsFile:
    format: str  # a name in runtime.FORMATS
    model_file: str  # the model's file name in the folder
    class_names: tuple
    height: int
    width: int
    crop_to_aspect: bool = False
    decode: str = ""  # smallvision's decoding key (data.decode.DecodeSpec.key)
    dtype: str = "uint8"  # the input tensor's dtype
    source: dict = dataclasses.field(default_factory=dict)  # {"model": file name, "sha256": ..., "run": name}
    check: dict = dataclasses.field(default_factory=dict)  # the parity check's figures
    versions: dict = dataclasses.field(default_factory=dict)
    embedding: int = 0  # width of a second output, the embedding novelty is measured on (0: none)
    model_sha256: str = ""  # of the model file beside it (a run folder's model.onnx)
    precision: str = "fp32"  # "int8": the model is quantized (its frozen base computed so in training)

    def to_json(self):
        n = len(self.class_names)
        names = list(self.class_names)
        return {
            "labels_version": VERSION,
            "format": self.format,
            "model_file": self.model_file,
            "class_names": names,
            "input": {"shape": [None, self.height, self.width, 3], "layout": "NHWC", "color": "RGB",
                      "pixels": "0..255, not normalised (the model does its own preprocessing)",
                      "dtype": self.dtype, "height": self.height, "width": self.width,
                      "resize": ("centre crop to the aspect, then resize" if self.crop_to_aspect else
                                 "resize to the size (aspect not kept)") + " (smallvision's decoding: " + self.decode
                      + ")",
                      "decode": self.decode, "crop_to_aspect": bool(self.crop_to_aspect),
                      "steps": list(STEPS), "reference_client": "predict.py (in an export folder)"},
            "output": ({"shape": [None, 1], "activation": "sigmoid",
                        "meaning": f"the probability of {names[1]!r}; {names[0]!r} is 1 - p"}
                       if is_binary(n) else
                       {"shape": [None, n], "activation": "softmax",
                        "meaning": "one probability per class, in class_names order"}),
            **({"embedding": {"output": 1, "shape": [None, self.embedding],
                              "meaning": "the image's embedding (novelty.npz in the run folder: how unlike the "
                                         "training images it is); a client that only classifies ignores it"}}
               if self.embedding else {}),
            "model_sha256": self.model_sha256,
            "precision": self.precision,
            "source": dict(self.source),
            "check": dict(self.check),
            "versions": dict(self.versions),
        }

    @classmethod
    def from_json(cls, data, model_files=None):
        """``model_files``: {format: model file name}, for a file that does not name its model."""
        inp = data["input"]
        fmt = data["format"]
        return cls(format=fmt, model_file=data.get("model_file") or (model_files or {}).get(fmt, ""),
                   class_names=tuple(str(c) for c in data["class_names"]), height=int(inp["height"]),
                   width=int(inp["width"]), crop_to_aspect=bool(inp.get("crop_to_aspect", False)),
                   decode=str(inp.get("decode", "")), dtype=str(inp.get("dtype", "uint8")),
                   source=dict(data.get("source") or {}), check=dict(data.get("check") or {}),
                   versions=dict(data.get("versions") or {}),
                   embedding=int((data.get("embedding") or {}).get("shape", [0, 0])[1]),
                   model_sha256=str(data.get("model_sha256", "")), precision=str(data.get("precision", "fp32")))

    def write(self, folder):
        from ._io import write_json_atomic
        write_json_atomic(os.path.join(folder, NAME), self.to_json())

    @classmethod
    def read(cls, folder, model_files=None):
        path = os.path.join(folder, NAME)
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_json(json.load(f), model_files)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise SmallvisionError(f"{path}: not a smallvision labels.json ({type(e).__name__}: {e})") from None


def in_folder(folder):
    """True when ``folder`` holds a labels.json."""
    return os.path.isfile(os.path.join(folder, NAME))

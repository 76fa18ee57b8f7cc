"""Walking a Keras model whose layers may be models themselves (a pretrained base, an
augmentation ``Sequential``, a head): the one place that knows how.

* :func:`leaves` — every layer that holds no other layer, depth first;
* :func:`conv_layers` — the convolutions among them;
* :func:`inference_graph` — the model without its augmentation layers (for exporters);
* :func:`flat_graph` / :func:`split` — the model with its nested models inlined into one
  graph of leaf layers, cut at any leaf: ``body`` (image -> that layer's output) and
  ``head`` (that output -> the model's output). This is what Grad-CAM and the feature maps
  need on a pretrained model, where ``keras.Model(model.input, inner_layer.output)`` fails
  (the inner layer belongs to the nested model's graph, whose input is another tensor).
"""
import keras

CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


def is_container(layer):
    return isinstance(layer, keras.Model)


def leaves(model):
    """Every layer inside ``model`` that holds no other layer, depth first."""
    out = []
    for layer in model.layers:
        out += leaves(layer) if is_container(layer) else [layer]
    return out


def conv_layers(model):
    """The model's convolution layers, nested models included, in order."""
    return [layer for layer in leaves(model) if type(layer).__name__ in CONV_TYPES]


def path_of(model, target):
    """"outer/inner/layer" names from ``model`` down to leaf ``target`` (None if absent)."""
    for layer in model.layers:
        if layer is target:
            return layer.name
        if is_container(layer):
            inner = path_of(layer, target)
            if inner:
                return f"{layer.name}/{inner}"
    return None


class CannotSplit(ValueError):
    """The model's graph cannot be cut there (or walked at all)."""


def producers(layer):
    """The operations whose outputs feed ``layer`` where the model calls it (its first call)."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return []
    return [t._keras_history.operation for t in nodes[0].input_tensors if hasattr(t, "_keras_history")]


def flat_graph(model):
    """The model as ``[(leaf layer, [input node ids])]`` in execution order, nested models
    inlined; node id -1 is the model's input. Raises CannotSplit for graphs with several
    inputs or outputs (not what smallvision builds)."""
    nodes = []

    def add(layer, inputs):
        nodes.append((layer, inputs))
        return len(nodes) - 1

    def inline(m, input_id):
        if isinstance(m, keras.Sequential):
            current = input_id
            for layer in m.layers:
                current = inline(layer, current) if is_container(layer) else add(layer, [current])
            return current
        if len(m.inputs) != 1 or len(m.outputs) != 1:
            raise CannotSplit(f"model {m.name} has {len(m.inputs)} inputs and {len(m.outputs)} outputs")
        out_of = {}
        for layer in m.layers:
            if isinstance(layer, keras.layers.InputLayer):
                out_of[id(layer)] = input_id
                continue
            try:
                ins = [out_of[id(p)] for p in producers(layer)]
            except KeyError:
                raise CannotSplit(f"layer {layer.name} of {m.name}: its inputs are not in the model's graph") from None
            if is_container(layer):
                if len(ins) != 1:
                    raise CannotSplit(f"nested model {layer.name} takes {len(ins)} inputs")
                out_of[id(layer)] = inline(layer, ins[0])
            else:
                out_of[id(layer)] = add(layer, ins)
        return out_of[id(m.outputs[0]._keras_history.operation)]

    output = inline(model, -1)
    if output != len(nodes) - 1:
        raise CannotSplit(f"model {model.name}: its output is not its last layer")
    return nodes


def _run(nodes, tensors, start, stop):
    for i in range(start, stop):
        layer, inputs = nodes[i]
        args = [tensors[j] for j in inputs]
        tensors[i] = layer(args[0] if len(args) == 1 else args)
    return tensors


def split(model, layers):
    """Cut ``model`` after leaf layer(s) ``layers`` (the last one is the cut).

    Returns:
        ``(body, head)``: ``body`` maps the model's input to the outputs of ``layers`` (a list
        when several are asked for), ``head`` maps the last one's output to the model's output.
        Both share the model's weights.

    Raises:
        CannotSplit: a later layer also reads something from before the cut (a skip
        connection around it), or the graph cannot be walked.
    """
    single = not isinstance(layers, (list, tuple))
    layers = [layers] if single else list(layers)
    nodes = flat_graph(model)
    index = {id(layer): i for i, (layer, _) in enumerate(nodes)}
    try:
        cuts = [index[id(layer)] for layer in layers]
    except KeyError:
        raise CannotSplit("a layer to cut at is not in the model") from None
    cut = max(cuts)
    inp = keras.Input(shape=model.input_shape[1:], name="probe_image")
    tensors = _run(nodes, {-1: inp}, 0, cut + 1)
    outputs = [tensors[c] for c in cuts]
    body = keras.Model(inp, outputs[0] if single else outputs, name=f"{model.name}_to_{nodes[cut][0].name}")
    for i in range(cut + 1, len(nodes)):
        early = [j for j in nodes[i][1] if j < cut]
        if early:
            raise CannotSplit(f"layer {nodes[i][0].name} reads {nodes[early[0]][0].name if early[0] >= 0 else 'the input'}"
                              f", from before {nodes[cut][0].name} (a skip connection around the cut)")
    fmap = keras.Input(shape=tuple(outputs[-1].shape[1:]), name="probe_features")
    tensors = _run(nodes, {cut: fmap}, cut + 1, len(nodes))
    head = keras.Model(fmap, tensors[len(nodes) - 1] if len(nodes) - 1 > cut else fmap,
                       name=f"{model.name}_from_{nodes[cut][0].name}")
    return body, head


def copy_weights(source, target):
    """Give every layer of ``source`` that has weights, nested ones included, to the layer of
    the same name in ``target`` (e.g. a trained head into the end-to-end model it belongs to);
    returns ``target``."""
    by_name = {layer.name: layer for layer in leaves(target) if layer.weights}
    for layer in leaves(source):
        if layer.weights:
            by_name[layer.name].set_weights(layer.get_weights())
    return target


def is_augmentation(layer):
    """Keras' random augmentation layers (RandomFlip, RandomRotation, RandomZoom, …): the
    identity outside training."""
    return type(layer).__name__.startswith("Random")


def inference_graph(model):
    """``model`` as it computes outside training: one flat graph without its augmentation layers
    (they are the identity there), sharing the model's weights; ``model`` itself when it has none.
    Exporters need this: augmentation layers break the ONNX and TF Lite conversions."""
    if not any(is_augmentation(layer) for layer in leaves(model)):
        return model
    nodes = flat_graph(model)
    inp = keras.Input(shape=model.input_shape[1:], dtype=model.inputs[0].dtype, name="image")
    tensors = {-1: inp}
    for i, (layer, inputs) in enumerate(nodes):
        args = [tensors[j] for j in inputs]
        if is_augmentation(layer):
            tensors[i] = args[0]
        else:
            tensors[i] = layer(args[0] if len(args) == 1 else args)
    return keras.Model(inp, tensors[len(nodes) - 1], name=f"{model.name}_inference")

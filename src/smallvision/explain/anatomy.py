"""A model's anatomy: per layer, output shape, parameters, receptive field and cumulative stride.

The receptive field of a unit is the size (in input pixels) of the image patch that can
influence it; the cumulative stride ("jump") is how many input pixels one step in the
layer's output moves. Along one axis, a layer with kernel k, stride s and dilation d turns
(rf, jump) into (rf + (k-1)*d*jump, jump*s). Dense, Flatten and global pooling see the
whole image. Where branches meet (Add, Concatenate), the widest input counts.
"""
import dataclasses

from ..models.walk import is_container, producers

WHOLE = "whole image"


@dataclasses.dataclass
class Row:
    name: str
    kind: str
    output_shape: tuple
    params: int
    trainable: bool
    receptive_field: object  # int, or WHOLE
    jump: int
    depth: int  # nesting level (layers inside a nested model are indented)


def _kernel(layer):
    cls = type(layer).__name__
    if cls in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose"):
        return layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0]
    if cls in ("MaxPooling2D", "AveragePooling2D"):
        return layer.pool_size[0], layer.strides[0], 1
    return None


def _sees_everything(layer):
    cls = type(layer).__name__
    return cls in ("Flatten", "Dense") or cls.startswith("Global")


def _shape(layer):
    try:
        return tuple(layer.output.shape[1:])
    except Exception:
        return ()


def _width(v):
    return (v[0] == WHOLE, 0 if v[0] == WHOLE else v[0])


def layer_table(model):
    """Rows for every layer, nested models expanded in place."""
    rows = []

    def walk(m, rf_in, jump_in, depth):
        state = {}  # layer name -> (rf, jump) after that layer
        last = (rf_in, jump_in)
        for layer in m.layers:
            inputs = [state[p.name] for p in producers(layer) if p.name in state]
            rf, jump = max(inputs, key=_width) if inputs else (rf_in, jump_in)
            row = Row(layer.name, type(layer).__name__, _shape(layer), layer.count_params(),
                      bool(layer.trainable), rf, jump, depth)
            rows.append(row)
            if is_container(layer):  # a nested model: its layers follow, indented
                rf, jump = walk(layer, rf, jump, depth + 1)
            elif rf != WHOLE and _sees_everything(layer):
                rf = WHOLE
            elif rf != WHOLE and _kernel(layer):
                k, s, d = _kernel(layer)
                rf, jump = rf + (k - 1) * d * jump, jump * s
            row.receptive_field, row.jump = rf, jump
            state[layer.name] = last = (rf, jump)
        return last

    walk(model, 1, 1, 0)
    return rows


def format_table(rows):
    header = ("layer", "type", "output shape", "params", "receptive field", "stride")
    body = [("  " * r.depth + r.name, r.kind, str(r.output_shape), f"{r.params:,}",
             r.receptive_field if r.receptive_field == WHOLE else f"{r.receptive_field}x{r.receptive_field}",
             str(r.jump)) for r in rows]
    widths = [max(len(str(x[i])) for x in [header] + body) for i in range(len(header))]
    line = lambda cols: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in
                                  enumerate(zip(cols, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def last_conv(rows):
    """The last row of a convolution layer (its receptive field is the model's widest local view)."""
    convs = [r for r in rows if "Conv" in r.kind]
    return convs[-1] if convs else None

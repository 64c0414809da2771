"""The benchmark's cases, shared by run.py (in one process) and separate.py (a process per side)."""

# (name, minidl Conv2D kwargs, input shape)
CONV_CASES = [
    ("conv3x3", dict(inmaps=32, outmaps=64, size=3, pad=1), (32, 32, 32, 32)),
    ("first_layer", dict(inmaps=3, outmaps=32, size=3, stride=2, pad=1), (32, 3, 64, 64)),
    ("grouped", dict(inmaps=64, outmaps=64, size=3, pad=1, groups=4), (32, 64, 16, 16)),
    ("dilated", dict(inmaps=32, outmaps=32, size=3, pad=2, dilation=2), (32, 32, 32, 32)),
    ("depthwise3x3", dict(inmaps=128, outmaps=128, size=3, pad=1, groups=128), (32, 128, 32, 32)),
    ("depthwise3x3_s2", dict(inmaps=256, outmaps=256, size=3, stride=2, pad=1, groups=256), (32, 256, 16, 16)),
    ("depthwise_x2", dict(inmaps=64, outmaps=128, size=3, pad=1, groups=64), (32, 64, 32, 32)),
    ("pointwise", dict(inmaps=128, outmaps=256, size=1), (32, 128, 16, 16)),
]
# separate.py's models: (name, model, width, classes, image size, {mode: batch}). "train_step" is
# forward, cross-entropy, backward and a momentum-SGD update; "eval_bN" an eval-mode forward at batch N
# (PyTorch's inside torch.no_grad(), minidl's keeping every module's output, as PuzzleLib does);
# "_folded" the same with batch norm folded into the convs first, by each side's own tool
# (minidl.inference.foldBatchNorm; torch.fx.experimental.optimization.fuse; onnxruntime always does);
# "_nograd" minidl's forward inside minidl.noGrad(), keeping only the model's output as torch.no_grad()
# does (the other sides run the mode without the suffix again)
_EVAL_224 = {"eval_b1": 1, "eval_b1_nograd": 1, "eval_b1_folded": 1, "eval_b1_folded_nograd": 1, "eval_b64": 64,
             "eval_b64_nograd": 64, "eval_b64_folded": 64}
SEPARATE_MODEL_CASES = [
    ("mobilenetv1_0.5", "v1", 0.5, 10, 32, {"eval_b64": 64, "eval_b64_nograd": 64, "eval_b64_folded": 64,
                                            "train_step": 64}),
    ("mobilenetv2_0.5", "v2", 0.5, 10, 32, {"eval_b64": 64, "eval_b64_nograd": 64, "eval_b64_folded": 64,
                                            "train_step": 64}),
    ("mobilenetv1_224", "v1", 1.0, 1000, 224, dict(_EVAL_224, train_step=32)),
    ("mobilenetv2_224", "v2", 1.0, 1000, 224, dict(_EVAL_224, train_step=32)),
]


def modeParts(mode):
    """(the mode without its suffixes, folded, nograd) of a mode name such as "eval_b1_folded_nograd"."""
    nograd = mode.endswith("_nograd")
    mode = mode[:-len("_nograd")] if nograd else mode
    folded = mode.endswith("_folded")
    return (mode[:-len("_folded")] if folded else mode), folded, nograd

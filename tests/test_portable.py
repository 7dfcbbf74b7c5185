"""Archives in the exact arithmetic open bit-exactly on every machine: the exact layers are the
int64 sums they claim to be, the arithmetic gives the same bits under plain and vector kernels
and any thread count, and archives cross between processes forced onto different instruction
sets, both ways, K-step inference included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, TREE, fixture_images, one_error_line, process_env

WORKER = REPO / "tests" / "exactness_worker.py"
# Plain (non-AVX) kernels in torch, oneDNN and MKL, and MKL's run-to-run reproducible mode:
# what a machine without vector extensions would run.
PLAIN_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                 "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "COMPATIBLE"}


def _env(plain: bool, threads: int) -> dict:
    env = process_env()
    for k in PLAIN_KERNELS:
        env.pop(k, None)
    if plain:
        env.update(PLAIN_KERNELS)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run(args, plain: bool, threads: int = 1) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          env=_env(plain, threads), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def _tiny_model_file(tmp_path):
    sys.path.insert(0, str(WORKER.parent))
    import exactness_worker

    torch.manual_seed(3)
    model = exactness_worker.tiny_model()
    # Weights that are not on any grid, and biases too, so the quantisation has work to do.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


# ---- the exact layers are exact --------------------------------------------------------------


def _int_conv2d(x, w, stride, padding):
    """conv2d of int64 tensors, by im2col and one int64 matmul per kernel offset."""
    n, cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    out = torch.zeros((n, cout, oh, ow), dtype=torch.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += torch.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def _int_conv_transpose2d(x, w, stride, padding):
    """conv_transpose2d of int64 tensors: every input pixel spread over the kernel."""
    n, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    full = torch.zeros((n, cout, (h - 1) * stride + kh, (wd - 1) * stride + kw), dtype=torch.int64)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i:i + stride * h:stride, j:j + stride * wd:stride] += torch.einsum("nchw,co->nohw", x, w[:, :, i, j])
    return full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]


def _grid_ints(t, bits, per_image):
    """The integers and the per-image (or whole-tensor) step of layers.to_grid(t, bits)."""
    from bbans.coding.arithmetic import pow2
    from bbans.models import layers

    q = layers.to_grid(t, bits, per_image)
    a = t.abs().amax(dim=tuple(range(1, t.ndim)), keepdim=True) if per_image else t.abs().amax()
    e = layers._exponent(a.double())
    step = pow2(e - bits)
    ints = q / step
    assert torch.equal(ints, torch.round(ints)) and ints.abs().max() <= 2 ** bits
    return ints.to(torch.int64), step


LAYER_CASES = [
    # (kind, cin, cout, kernel, stride, padding, batch, size): sizes where the libraries switch
    # kernels (1x1, strided, a batch of one, odd sizes, the largest fan-in a bundled model has)
    ("conv", 3, 8, 3, 1, 1, 1, 9),
    ("conv", 16, 5, 4, 2, 1, 7, 12),
    ("conv", 64, 64, 3, 1, 1, 2, 8),
    ("conv", 39, 9, 1, 1, 0, 3, 14),
    ("convT", 64, 27, 4, 2, 1, 2, 7),
    ("convT", 8, 3, 4, 2, 1, 5, 4),
    ("linear", 784, 500, None, None, None, 6, None),
    ("linear", 500, 1568, None, None, None, 1, None),
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}" for c in LAYER_CASES])
def test_exact_layers_match_an_int64_reference(case):
    from bbans.coding import arithmetic as ar
    from bbans.models import layers

    kind, cin, cout, k, stride, padding, batch, size = case
    torch.manual_seed(0)
    if kind == "conv":
        layer = layers.Conv2d(cin, cout, k, stride=stride, padding=padding).double()
        fan = max(cin, cout) * k * k
        x = torch.randn(batch, cin, size, size, dtype=torch.float64) * torch.logspace(-3, 2, batch, dtype=torch.float64)[:, None, None, None]
    elif kind == "convT":
        layer = layers.ConvTranspose2d(cin, cout, k, stride=stride, padding=padding).double()
        fan = max(cin, cout) * k * k
        x = torch.randn(batch, cin, size, size, dtype=torch.float64) * 7.0
    else:
        layer = layers.Linear(cin, cout).double()
        fan = max(cin, cout)
        x = torch.randn(batch, cin, dtype=torch.float64) * 3.0
    with ar.using(ar.EXACT):
        got = layer(x)
    xi, xstep = _grid_ints(x, layers.ACT_BITS, per_image=True)
    wi, wstep = _grid_ints(layer.weight.detach(), layers.weight_bits(fan), per_image=False)
    if kind == "conv":
        sums = _int_conv2d(xi, wi, stride, padding)
    elif kind == "convT":
        sums = _int_conv_transpose2d(xi, wi, stride, padding)
    else:
        sums = xi @ wi.t()
    assert sums.abs().max() < 2 ** 53
    shape = (1, -1) + (1,) * (sums.ndim - 2)
    want = sums.to(torch.float64) * (xstep * wstep).reshape((-1,) + (1,) * (sums.ndim - 1)) + layer.bias.detach().reshape(shape)
    assert got.shape == want.shape
    assert torch.equal(got, want)
    # ...and they are the float layer up to the grids' rounding
    ref = F.conv2d(x, layer.weight, layer.bias, stride, padding) if kind == "conv" else None
    if ref is not None:
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * float(ref.detach().abs().max()))


def test_a_frozen_exact_layer_follows_its_weights_when_they_change():
    """A coder keeps a frozen layer's weights on their grid between calls; loading other weights
    (in place, as load_state_dict does) or moving the layer must not leave the old grid in use."""
    from bbans.coding import arithmetic as ar
    from bbans.models import layers

    torch.manual_seed(1)
    layer = layers.Conv2d(4, 6, 3, padding=1).double().requires_grad_(False)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    fresh = layers.Conv2d(4, 6, 3, padding=1).double().requires_grad_(False)
    with ar.using(ar.EXACT):
        before = layer(x)
        assert torch.equal(layer(x), before)
        layer.load_state_dict(fresh.state_dict())
        assert torch.equal(layer(x), fresh(x)) and not torch.equal(layer(x), before)
        with torch.no_grad():
            layer.weight.mul_(2.0)
        doubled = layer(x)
        layer.float().double()
        assert torch.equal(layer(x), doubled)
        assert not torch.equal(doubled, fresh(x))


def test_exact_exp_without_autograd_is_the_same_operations_as_with_it():
    """exact_exp runs in place when nothing differentiates through it; the bits must be those of
    the out-of-place sequence that defines exact-1 (and that autograd still runs)."""
    from bbans.coding import arithmetic as ar

    x = torch.cat([torch.randn(100_000, dtype=torch.float64) * 40,
                   torch.tensor([0.0, -0.0, 1e-300, -750.0, 750.0, 709.5, -708.2], dtype=torch.float64)])
    kept = x.clone()
    plain = ar.exact_exp(x)
    with torch.enable_grad():
        tracked = ar.exact_exp(x.clone().requires_grad_(True))
    assert torch.equal(plain.view(torch.int64), tracked.detach().view(torch.int64))
    assert torch.equal(x.view(torch.int64), kept.view(torch.int64))  # its input left as it was


def test_an_images_exact_posterior_does_not_depend_on_its_batch_mates_nor_the_code_on_threads():
    from bbans.coding import arithmetic as ar
    from bbans.coding.inference import posterior
    from conftest import engine_round_trip, fake_model

    model = fake_model("mnist-hier")
    x = fixture_images("mnist")[:5]
    prev = torch.get_num_threads()
    try:
        one, _, _ = engine_round_trip(model, x, K=2, lanes=8, threads=1)
        two, _, back = engine_round_trip(model, x, K=2, lanes=8, threads=2)
    finally:
        torch.set_num_threads(prev)
    assert one == two and np.array_equal(back, x)
    with ar.using(ar.EXACT):
        mu1, s1 = posterior(model, torch.as_tensor(x[:1]), K=2)
        mu5, s5 = posterior(model, torch.as_tensor(x), K=2)
    assert torch.equal(mu1[0], mu5[0]) and torch.equal(s1[0], s5[0])


# ---- across instruction sets -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    images = tmp / "images.npy"
    np.save(images, fixture_images("mnist")[:6])
    return _tiny_model_file(tmp), images


def test_exact_arithmetic_is_the_same_bits_under_plain_and_vector_kernels(tiny, tmp_path):
    model, images = tiny
    digests = []
    for plain, threads in ((True, 1), (False, 2)):
        out = tmp_path / f"{plain}.json"
        _run([WORKER, "digest", out, model, images], plain, threads)
        digests.append(json.loads(out.read_text()))
    plain, vector = digests
    assert plain["capability"] == "DEFAULT"
    assert plain.pop("capability") and vector.pop("capability")
    assert (plain.pop("threads"), vector.pop("threads")) == (1, 2)
    assert plain == vector


@pytest.mark.parametrize("compress_plain", [True, False], ids=["plain-to-vector", "vector-to-plain"])
def test_engine_archive_made_under_one_instruction_set_opens_under_the_other(tiny, tmp_path, compress_plain):
    model, images = tiny
    coded = tmp_path / "coded.json"
    _run([WORKER, "compress", model, images, 3, coded], compress_plain, 1 if compress_plain else 2)
    out = tmp_path / "out.npy"
    proc = _run([WORKER, "decompress", model, coded, out], not compress_plain, 2 if compress_plain else 1)
    made = json.loads(coded.read_text())["capability"]
    assert made != proc.stdout.strip()  # the two ends really ran different kernels
    assert np.array_equal(np.load(out), np.load(images))


def _bbans(args, plain: bool, threads: int):
    return subprocess.run([sys.executable, "-m", "bbans", *map(str, args)], capture_output=True, text=True,
                          env=_env(plain, threads), timeout=600)


CLI_CASES = [  # (model, its files, compress under plain kernels): mnist-hier both ways
    ("mnist-hier", ("digits/d0.png", "digits/d1.pgm"), True),
    ("mnist-hier", ("digits/d0.png", "digits/d1.pgm"), False),
    ("binary-mnist-hier", ("binary/b0.png",), False),
    ("cifar10-hier", ("colour/c0.png",), True),
]


@pytest.mark.parametrize("model,files,compress_plain", CLI_CASES,
                         ids=[f"{m}-{'plain-to-vector' if p else 'vector-to-plain'}" for m, _, p in CLI_CASES])
def test_archive_of_a_bundled_model_from_one_instruction_set_opens_under_the_other(tmp_path, model, files,
                                                                                   compress_plain):
    """Through the command line with a bundled default model at K=2: every file back byte for
    byte across the two kernel sets."""
    src = tmp_path / "in"
    src.mkdir()
    for f in files:
        (src / Path(f).name).write_bytes((TREE / f).read_bytes())
    archive = tmp_path / "a.bb"
    made = _bbans(["compress", src, "-o", archive, "--K", "2", "--model", model, "-q"], compress_plain, 1)
    assert made.returncode == 0, made.stderr
    groups = json.loads(_bbans(["info", archive, "--json"], False, 1).stdout)["groups"]
    # binary-mnist-hier's steps are measured not to pay (its kstep_gain): it runs none.
    K = 0 if model == "binary-mnist-hier" else 2
    assert [(g["model"], g["arithmetic"], g["K"]) for g in groups] == [(model, "exact-1", K)]
    back = _bbans(["decompress", archive, "-o", tmp_path / "out"], not compress_plain, 2)
    assert back.returncode == 0, back.stderr
    for p in src.iterdir():
        assert (tmp_path / "out" / p.name).read_bytes() == p.read_bytes()


def _digit_archive_with(bbans_main, tmp_path, *options, **engine) -> tuple[Path, Path]:
    """d0.png coded with mnist-hier (and `options`), then its group's engine settings changed to
    `engine` in a re-signed copy: (the digit, the edited archive)."""
    from conftest import edit_header

    src = tmp_path / "d0.png"
    src.write_bytes((TREE / "digits" / "d0.png").read_bytes())
    archive = tmp_path / "a.bb"
    assert bbans_main("compress", src, "-o", archive, "--model", "mnist-hier", *options)[0] == 0

    def edit(h):
        for g in h["groups"]:
            g["engine"].update(engine)

    edited = tmp_path / "b.bb"
    edited.write_bytes(edit_header(archive.read_bytes(), edit))
    return src, edited


def test_a_float_archive_is_refused_on_another_device_class_with_one_line(bbans_main, tmp_path):
    """Archives in the float arithmetic keep their old rule: decoded only where made."""
    _, archive = _digit_archive_with(bbans_main, tmp_path, "--arithmetic", "float", device="cuda")
    code, out, _ = bbans_main("info", archive, "--json")
    assert json.loads(out)["groups"][0]["arithmetic"] == "float"
    if not torch.cuda.is_available():
        code, _, err = bbans_main("decompress", archive, "-o", tmp_path / "out")
        assert code == 4 and "GPU" in one_error_line(err)
        assert not (tmp_path / "out").exists()


def test_an_exact_archive_made_on_a_gpu_opens_on_a_cpu(bbans_main, tmp_path):
    """The device an exact archive was coded on is a note, not a condition."""
    src, archive = _digit_archive_with(bbans_main, tmp_path, device="cuda")
    assert bbans_main("decompress", archive, "-o", tmp_path / "out", "--device", "cpu")[0] == 0
    assert (tmp_path / "out" / "d0.png").read_bytes() == src.read_bytes()


def test_an_archive_in_an_unknown_arithmetic_is_refused_by_name(bbans_main, tmp_path):
    _, archive = _digit_archive_with(bbans_main, tmp_path, arithmetic="exact-9")
    code, _, err = bbans_main("decompress", archive, "-o", tmp_path / "out")
    assert code == 4 and "exact-9" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_threads_change_neither_an_exact_archive_nor_what_it_decodes_to(bbans_main, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("d0.png", "d1.pgm"):
        (src / name).write_bytes((TREE / "digits" / name).read_bytes())
    archives = []
    for t in ("1", "2"):
        archive = tmp_path / f"t{t}.bb"
        assert bbans_main("compress", src, "-o", archive, "--model", "mnist-hier", "--K", "1", "-T", t)[0] == 0
        archives.append(archive.read_bytes())
    assert archives[0] == archives[1]
    code, _, _ = bbans_main("decompress", tmp_path / "t2.bb", "-o", tmp_path / "out", "-T", "1")
    assert code == 0
    for name in ("d0.png", "d1.pgm"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()


def test_a_float_archive_records_its_thread_count_and_decodes_with_it(bbans_main, tmp_path):
    src = tmp_path / "d0.png"
    src.write_bytes((TREE / "digits" / "d0.png").read_bytes())
    archive = tmp_path / "a.bb"
    assert bbans_main("compress", src, "-o", archive, "--model", "mnist-hier", "--arithmetic", "float", "-T", "1")[0] == 0
    code, out, _ = bbans_main("info", archive, "--json")
    assert json.loads(out)["groups"][0]["threads"] == 1
    code, _, _ = bbans_main("decompress", archive, "-o", tmp_path / "out", "-T", "2")
    assert code == 0 and (tmp_path / "out" / "d0.png").read_bytes() == src.read_bytes()

"""Attention maps and training curves: the numbers plotted, the files written, and `qelm plot`."""

import math
import re

import pytest
import torch
from PIL import Image

from qelm import QELM, ClassicalLM
from qelm.checkpoint import save_checkpoint
from qelm.metrics import read_runs
from qelm.plot import (attention_for_text, attention_maps, figure_format, plot_attention, plot_curves, save_figure)
from qelm.tokenizer import CharTokenizer


class _Chars:
    """A tokenizer over 'a'..'k' (ids 0..10), enough for the tiny config's vocab of 11."""

    def encode(self, text):
        return [ord(c) - ord("a") for c in text]

    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)


def _pixels(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size  # (width, height)


@pytest.fixture(params=["quantum", "fidelity", "classical"])
def model(request, tiny_config):
    config = tiny_config.replace(n_layers=2, attention=request.param)
    return ClassicalLM(config) if request.param == "classical" else QELM(config)


# --- attention ----------------------------------------------------------------------------------------
def test_attention_maps_are_causal_distributions(model):
    idx = torch.tensor([3, 1, 4, 1, 5])
    maps = attention_maps(model, idx)
    assert maps.shape == (2, 2, 5, 5)  # (layers, heads, T, T)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 2, 5), atol=1e-5)
    assert torch.all(maps.triu(diagonal=1) == 0), "a token attends only to itself and earlier tokens"
    assert all(not m.keep_attention for m in model.modules() if hasattr(m, "keep_attention")), "flags restored"


def test_attention_of_a_prefix_does_not_see_later_tokens(model):
    a = attention_maps(model, torch.tensor([3, 1, 4, 1, 5]))
    b = attention_maps(model, torch.tensor([3, 1, 4, 9, 9]))
    assert torch.allclose(a[..., :3, :3], b[..., :3, :3], atol=1e-6)
    assert not torch.allclose(a[..., 3:, :], b[..., 3:, :], atol=1e-6)


def test_attention_for_text_keeps_the_last_context_len_tokens(tiny_config):
    model = QELM(tiny_config)  # context_len 6
    maps, tokens, dropped = attention_for_text(model, _Chars(), "abcdefghij")
    assert tokens == list("efghij") and dropped == 4 and maps.shape[-1] == 6
    with pytest.raises(ValueError, match="text is empty"):
        attention_for_text(model, _Chars(), "")


def test_plot_attention_writes_a_png_of_the_requested_size(tiny_config, tmp_path):
    q = QELM(tiny_config)
    c = ClassicalLM.matched_to(q)
    panels = {"quantum": attention_for_text(q, _Chars(), "abcab")[:2],
              "classical": attention_for_text(c, _Chars(), "abcab")[:2]}
    out = plot_attention(panels, tmp_path / "att.png", width=900, height=420)
    assert out.stat().st_size > 10_000 and _pixels(out) == (900, 420)
    # default size grows with the number of heatmaps: 4 columns (2 models x 2 heads), 1 row
    assert _pixels(plot_attention(panels, tmp_path / "default.png")) == (330 * 4 + 120, 440)


def test_plot_attention_rejects_mismatched_tokens(tmp_path):
    with pytest.raises(ValueError, match="shape \\(1, 1, 3, 3\\) for 2 tokens"):
        plot_attention({"m": (torch.ones(1, 1, 3, 3), ["a", "b"])}, tmp_path / "x.png")


# --- curves -------------------------------------------------------------------------------------------
def test_plot_curves_writes_a_png_of_the_requested_size(tmp_path, write_run):
    runs = read_runs([write_run(tmp_path / "a"), write_run(tmp_path / "b", (("qelm", 0.5),))])
    assert len(runs) == 3
    out = plot_curves(runs, tmp_path / "curves.png", width=1000, height=450)
    assert out.stat().st_size > 10_000 and _pixels(out) == (1000, 450)


def test_a_long_run_with_its_unigram_baseline_plots(tmp_path):
    """What a training run draws into loss_curve.png: hundreds of noisy steps (shown with a moving average)
    and the unigram baseline, labelled by model name rather than by path."""
    g = torch.Generator().manual_seed(0)
    records = [{"step": s, "loss": 3.0 * math.exp(-s / 100) + 0.5 + 0.2 * float(torch.rand(1, generator=g))}
               for s in range(1, 301)]
    records[-1].update(val_loss=0.7, val_perplexity=math.exp(0.7))
    out = plot_curves({"QELM": records, "classical twin": records[:150]}, tmp_path / "loss.png", unigram_loss=3.1)
    assert _pixels(out) == (1200, 560)


def test_figure_format_is_checked_before_drawing(tmp_path):
    from matplotlib.figure import Figure

    assert [figure_format(f"x.{s}") for s in ("png", "SVG", "pdf")] == ["png", "svg", "pdf"]
    for name in ("x.jpg", "x", "x.png.tmp"):
        with pytest.raises(ValueError, match="end it in .png, .svg or .pdf"):
            figure_format(name)
    fig = Figure(figsize=(2, 1))
    assert save_figure(fig, tmp_path / "a" / "f.svg", make_parents=True).read_bytes().lstrip().startswith(b"<?xml")


def test_bad_size_or_suffix_leaves_the_old_file(tmp_path, write_run):
    runs = read_runs([write_run(tmp_path / "run")])
    out = tmp_path / "curves.png"
    out.write_bytes(b"old")
    with pytest.raises(ValueError, match="width=50 pixels is invalid"):
        plot_curves(runs, out, width=50)
    with pytest.raises(ValueError, match="has no image suffix"):
        plot_curves(runs, tmp_path / "curves.bmp")
    assert out.read_bytes() == b"old"


# --- CLI ----------------------------------------------------------------------------------------------
def test_cli_plot_curves(cli, tmp_path, write_run):
    run = write_run(tmp_path / "run")
    rc, out, err = cli("plot", "curves", run, "--out", tmp_path / "c.png", "--width", 800, "--height", 400)
    assert rc == 0 and err == "" and "2 curve set(s)" in out
    assert _pixels(tmp_path / "c.png") == (800, 400)
    rc, out, err = cli("plot", "curves", tmp_path / "missing", "--out", tmp_path / "c.png")
    assert rc == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_cli_plot_attention_side_by_side(cli, tmp_path, tiny_config):
    tokenizer = CharTokenizer(list("abcdefghijk"))
    q = QELM(tiny_config)
    save_checkpoint(tmp_path / "q", q, tokenizer)
    save_checkpoint(tmp_path / "c", ClassicalLM.matched_to(q), tokenizer)
    rc, out, err = cli("plot", "attention", "--checkpoint", tmp_path / "q", "--checkpoint", tmp_path / "c",
                       "--prompt", "abcdefgh", "--out", tmp_path / "a.png", "--width", 1000, "--height", 380)
    assert rc == 0, err
    assert "plotting its last 6 tokens (2 dropped)" in out and "QELM = " in out and "classical = " in out
    assert _pixels(tmp_path / "a.png") == (1000, 380)
    rc, _, err = cli("plot", "attention", "--checkpoint", tmp_path / "q", "--prompt", "xyz", "--out", tmp_path / "b.png")
    assert rc == 2 and "outside the tokenizer's vocabulary" in err and not (tmp_path / "b.png").exists()


def test_curve_labels_are_relative_to_the_shared_folder():
    from qelm.plot import _short_labels

    assert _short_labels(["runs/demo/qelm", "runs/demo/twin", "runs/demo/matched"]) == ["qelm", "twin", "matched"]
    assert _short_labels(["a/x/qelm", "b/y/qelm"]) == ["a/x/qelm", "b/y/qelm"]
    assert _short_labels(["runs/one"]) == ["one"]


# --- figures a reader can read --------------------------------------------------------------------------------
@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions draw, kept instead of written (each drawn once, so its labels exist)."""
    import qelm.plot

    figures = []

    def keep(fig, out, **kwargs):
        fig.canvas.draw()
        figures.append(fig)
        return out

    monkeypatch.setattr(qelm.plot, "save_figure", keep)
    return figures


def _labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_majorticklabels() + axis.get_minorticklabels() if t.get_text()]


def test_curves_have_plain_numbers_on_the_log_axis_and_whole_steps(tmp_path, drawn):
    records = [{"step": s, "loss": 3.6 - 0.1 * s, "val_loss": 3.5 - 0.1 * s, "val_perplexity": math.exp(3.5 - 0.1 * s)}
               for s in range(4)]  # perplexity 20 to 40 over 3 steps: the range that drew 2x10^1 and step 0.5
    plot_curves({"qelm": records}, tmp_path / "c.png")
    ax_loss, ax_ppl = drawn[0].axes[:2]
    labels = _labels(ax_ppl.yaxis)
    assert labels and all(re.fullmatch(r"[\d,]+(\.\d+)?", t.replace("\u2212", "-")) for t in labels), labels
    for ax in (ax_loss, ax_ppl):
        steps = [float(t.replace("\u2212", "-")) for t in _labels(ax.xaxis)]
        assert steps and all(s.is_integer() for s in steps), steps


def test_the_train_loss_is_drawn_as_logged_and_as_a_mean(tmp_path, drawn):
    records = [{"step": s, "loss": 3.0 + 0.3 * (-1) ** s} for s in range(12)]
    plot_curves({"qelm": records}, tmp_path / "c.png")
    ax_loss = drawn[0].axes[0]
    assert len(ax_loss.lines) == 2  # faint as logged, bold the 2-record mean
    raw, mean = ax_loss.lines
    assert raw.get_alpha() < 1 and len(mean.get_xdata()) == len(raw.get_xdata()) - 1
    assert "2-record mean" in mean.get_label()


def test_comparing_runs_colours_by_model_and_styles_by_run(tmp_path, write_run, drawn):
    runs = read_runs([write_run(tmp_path / f"run{i}", (("qelm", 1.0), ("twin", 0.7), ("matched", 0.5)))
                      for i in range(4)])
    assert len(runs) == 12
    plot_curves(runs, tmp_path / "c.png")
    legend = drawn[0].legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["qelm", "twin", "matched", "run0", "run1", "run2", "run3"]
    ax_loss = drawn[0].axes[0]
    bold = [line for line in ax_loss.lines if line.get_alpha() is None and line.get_linestyle() != "None"]
    assert len({line.get_color() for line in bold}) == 3 and len({line.get_linestyle() for line in bold}) == 4


def test_attention_ticks_label_every_token_or_say_the_stride(tmp_path, drawn):
    maps = torch.full((1, 1, 40, 40), 1 / 40)
    tokens = [f"t{i}" for i in range(40)]
    plot_attention({"m": (maps, tokens)}, tmp_path / "a.png", width=2000, height=2000)
    ax = drawn[0].axes[0]
    assert _labels(ax.xaxis) == tokens and "every" not in drawn[0]._suptitle.get_text()
    plot_attention({"m": (maps, tokens)}, tmp_path / "a.png", width=400, height=400)
    shown = _labels(drawn[1].axes[0].xaxis)
    step = tokens.index(shown[1])
    assert shown == tokens[::step] and step > 1
    assert f"ticks label every {step}{'nd' if step == 2 else 'rd' if step == 3 else 'th'} token" in \
        drawn[1]._suptitle.get_text()

"""TransAct and DIN history encoders: padding, empty histories, the random recent mask, order,
early fusion, the serving split, gradients and export."""

from __future__ import annotations

import doctest

import pytest
import torch

import ranker.nn.din
import ranker.nn.transact
from ranker.nn.din import DINAttention
from ranker.nn.embeddings import CategoricalFields, FeatureEmbeddings
from ranker.nn.transact import TransActEncoder, hide_recent

N_ITEMS, D_ITEM, N_ACTIONS, ACTION_DIM = 60, 8, 4, 4
LENGTHS = [6, 3, 0, 1, 5]  # real events per row; row 2 is an empty history
L = 6


def make_items(seed: int = 0) -> FeatureEmbeddings:
    torch.manual_seed(seed)
    return FeatureEmbeddings(CategoricalFields({"item": "item"}, {}, {"item": N_ITEMS}), D_ITEM)


def make_batch(seed: int = 0, lengths: list[int] = LENGTHS, width: int = L) -> dict[str, torch.Tensor]:
    """Left-padded histories; times increase towards the past (most recent last)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(width) >= width - torch.tensor(lengths).unsqueeze(1)  # (B, L)
    items = torch.randint(3, N_ITEMS, (len(lengths), width), generator=g) * mask
    actions = torch.randint(1, N_ACTIONS, (len(lengths), width), generator=g) * mask
    hours = torch.arange(width, 0, -1, dtype=torch.float32).expand(len(lengths), width) * 5.0
    times = torch.log1p(hours + torch.rand(len(lengths), width, generator=g)) * mask
    return {"hist/h/items": items, "hist/h/mask": mask, "hist/h/actions": actions, "hist/h/times": times}


def left_pad(batch: dict[str, torch.Tensor], extra: int, seed: int = 9) -> dict[str, torch.Tensor]:
    """`extra` more padding columns on the left, holding random junk (it must not matter)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in batch.items():
        if key.endswith("mask"):
            pad = torch.zeros(value.shape[0], extra, dtype=torch.bool)
        elif value.is_floating_point():
            pad = torch.rand(value.shape[0], extra, generator=g) * 5
        else:
            pad = torch.randint(0, N_ACTIONS, (value.shape[0], extra), generator=g)
        out[key] = torch.cat([pad, value], dim=1)
    # junk in the existing padded slots too
    junk = torch.randint(3, N_ITEMS, out["hist/h/items"].shape, generator=g)
    out["hist/h/items"] = torch.where(out["hist/h/mask"], out["hist/h/items"], junk)
    return out


def inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """A history encoder's tensors from a test batch: items, mask, actions, times (may be None)."""
    return batch["hist/h/items"], batch["hist/h/mask"], batch.get("hist/h/actions"), batch.get("hist/h/times")


def run(encoder: torch.nn.Module, batch: dict[str, torch.Tensor], cand: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder on a test batch, unpacked as the ranker does."""
    return encoder(*inputs(batch), candidate=cand)


def candidates(items: FeatureEmbeddings, n: int = len(LENGTHS), seed: int = 1) -> torch.Tensor:
    ids = torch.randint(3, N_ITEMS, (n,), generator=torch.Generator().manual_seed(seed))
    return items.lookup("item", ids)


def transact(items: FeatureEmbeddings, **kwargs: object) -> TransActEncoder:
    torch.manual_seed(3)
    return TransActEncoder(items, "item", N_ACTIONS, action_dim=ACTION_DIM, ff_dim=16, **kwargs)  # type: ignore[arg-type]


def din(items: FeatureEmbeddings) -> DINAttention:
    torch.manual_seed(3)
    return DINAttention(items, "item", N_ACTIONS, action_dim=ACTION_DIM, hidden=(16, 8))


# -- shapes, empty histories, padding ------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 3, 10])
def test_shape_and_empty_history_is_finite_zero(k: int) -> None:
    items = make_items()
    enc = transact(items, k_recent=k).eval()
    out = run(enc, make_batch(), candidates(items))
    assert enc.d_model == D_ITEM + ACTION_DIM + D_ITEM  # event ⊕ candidate width by default
    assert out.shape == (len(LENGTHS), (k + 1) * enc.d_model) == (len(LENGTHS), enc.out_dim)
    assert torch.isfinite(out).all()
    assert (out[2] == 0).all() and (out[[0, 1, 3, 4]] != 0).any(1).all()
    # a history shorter than k: the k-recent rows that were padding are zeros
    if k >= 3:
        row = out[3, : k * enc.d_model].view(k, enc.d_model)
        assert (row[:-1] == 0).all() and (row[-1] != 0).any()


def test_all_empty_batch_in_training_is_finite_with_finite_gradients() -> None:
    items = make_items()
    enc = transact(items).train()
    seen: list[torch.Tensor] = []
    enc.encoder.register_forward_pre_hook(lambda _m, args: seen.append(~args[1]))
    out = run(enc, make_batch(lengths=[0, 0]), candidates(items, 2))
    out.sum().backward()
    assert (out == 0).all()
    # the encoder never gets an all-masked row (softmax over no keys is NaN)
    assert len(seen) == 1 and not seen[0].all(1).any()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


@pytest.mark.parametrize("time_encoding", [False, True])
@pytest.mark.parametrize("grad", [True, False])  # no_grad takes PyTorch's fused fast path
def test_transact_padding_invariance(time_encoding: bool, grad: bool) -> None:
    items = make_items()
    enc = transact(items, time_encoding=time_encoding).eval()
    batch, cand = make_batch(), candidates(items)
    with torch.set_grad_enabled(grad):
        ref = run(enc, batch, cand)
        wide = run(enc, left_pad(batch, 4), cand)
    torch.testing.assert_close(wide, ref, atol=1e-5, rtol=1e-5)


def test_din_padding_invariance_and_empty_history() -> None:
    items = make_items()
    model = din(items)
    batch, cand = make_batch(), candidates(items)
    ref = run(model, batch, cand)
    torch.testing.assert_close(run(model, left_pad(batch, 4), cand), ref, atol=1e-6, rtol=1e-6)
    assert ref.shape == (len(LENGTHS), D_ITEM + ACTION_DIM) and torch.isfinite(ref).all()
    assert (ref[2] == 0).all() and (ref[[0, 1, 3, 4]] != 0).any(1).all()


def test_din_matches_the_formula_and_is_not_normalised() -> None:
    items = make_items()
    model = din(items)
    batch, cand = make_batch(lengths=[3]), candidates(items, 1)
    x = items.lookup("item", batch["hist/h/items"][0, -3:])  # (3, d)
    e = torch.cat([x, model.action_table(batch["hist/h/actions"][0, -3:])], -1)  # type: ignore[misc]
    c = cand.expand_as(x)
    a = model.unit(torch.cat([e, c, x - c, x * c], -1))  # (3, 1)
    torch.testing.assert_close(run(model, batch, cand)[0], (a * e).sum(0))
    # no softmax: the same events twice give twice the vector
    doubled = {k: torch.cat([v[:, -3:], v[:, -3:]], 1) for k, v in batch.items()}
    torch.testing.assert_close(run(model, doubled, cand), 2 * run(model, batch, cand))
    with pytest.raises(ValueError, match="candidate"):
        run(model, batch, None)


# -- the random recent mask ----------------------------------------------------------------


def test_recent_mask_active_in_train_and_inactive_in_eval() -> None:
    items = make_items()
    enc = transact(items, dropout=0.0, recent_mask=3)
    off = transact(items, dropout=0.0, recent_mask=None)
    off.load_state_dict(enc.state_dict())
    batch, cand = make_batch(), candidates(items)
    enc.eval()
    ref = run(enc, batch, cand)
    torch.testing.assert_close(run(enc, batch, cand), ref, atol=0, rtol=0)  # deterministic
    torch.testing.assert_close(run(off, batch, cand), ref, atol=0, rtol=0)  # = mask disabled
    torch.testing.assert_close(run(off.train(), batch, cand), ref)  # dropout 0: train = eval w/o mask
    enc.train()
    torch.manual_seed(0)
    first = run(enc, batch, cand)
    torch.manual_seed(1)
    second = run(enc, batch, cand)
    assert not torch.allclose(first, second)
    assert not torch.allclose(first, ref) and not torch.allclose(second, ref)


def test_hide_recent_events_hides_a_random_suffix_of_real_events() -> None:
    torch.manual_seed(0)
    mask = make_batch()["hist/h/mask"]
    counts = set()
    for _ in range(200):
        kept = hide_recent(mask, 2)
        assert not (kept & ~mask).any()  # padding stays padding
        for row, real in zip(kept, mask, strict=True):
            hidden = (real & ~row).nonzero().flatten().tolist()
            assert hidden == list(range(L - len(hidden), L))  # the most recent ones
            counts.add(len(hidden))
    assert counts == {0, 1, 2}  # w ~ Uniform{0..W}, capped by the history length


def test_hide_recent_seconds_hides_the_events_inside_the_window() -> None:
    torch.manual_seed(0)
    batch = make_batch()
    mask, times = batch["hist/h/mask"], batch["hist/h/times"]
    seconds = torch.expm1(times) * 3600
    window = 14.0 * 3600  # between the 2nd and 3rd most recent events (5h, 10h, 15h, ... ago)
    counts = set()
    for _ in range(200):
        kept = hide_recent(mask, window, times)
        hidden = mask & ~kept
        assert (seconds[hidden] < window).all()
        for row in range(mask.shape[0]):  # every hidden event is more recent than every kept one
            if hidden[row].any() and kept[row].any():
                assert seconds[row][hidden[row]].max() < seconds[row][kept[row]].min()
        counts.add(int(hidden[0].sum()))  # row 0 has 6 events: 5h, 10h, 15h, ... ago
    assert counts == {0, 1, 2}  # s ~ Uniform[0, 14h): the window itself is random
    with pytest.raises(ValueError, match="seconds"):
        hide_recent(mask, window)


# -- order, fusion -------------------------------------------------------------------------


def reverse_real_events(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reverse each row's real events in place (padding and times stay where they are)."""
    out = {k: v.clone() for k, v in batch.items()}
    for row, n in enumerate(batch["hist/h/mask"].sum(1).tolist()):
        for key in ("hist/h/items", "hist/h/actions"):
            out[key][row, L - n :] = batch[key][row, L - n :].flip(0)
    return out


def test_permutation_changes_only_the_k_recent_part() -> None:
    items = make_items()
    enc = transact(items).eval()
    batch, cand = make_batch(), candidates(items)
    before, after = run(enc, batch, cand), run(enc, reverse_real_events(batch), cand)
    pool = slice(enc.k_recent * enc.d_model, None)
    torch.testing.assert_close(after[:, pool], before[:, pool], atol=1e-5, rtol=1e-5)
    changed = ~torch.isclose(after[:, : pool.start], before[:, : pool.start], atol=1e-4).all(1)
    assert changed.tolist() == [True, True, False, False, True]  # rows with ≥ 2 events
    # with the time encoding, the order (through the times) also reaches the max-pool
    timed = transact(items, time_encoding=True).eval()
    assert not torch.allclose(
        run(timed, reverse_real_events(batch), cand)[:, pool], run(timed, batch, cand)[:, pool], atol=1e-4
    )


def test_early_fusion_makes_the_output_depend_on_the_candidate() -> None:
    items = make_items()
    batch, c1, c2 = make_batch(), candidates(items, seed=1), candidates(items, seed=2)
    fused = transact(items).eval()
    diff = ~torch.isclose(run(fused, batch, c1), run(fused, batch, c2)).all(1)
    assert diff.tolist() == [True, True, False, True, True]  # not the empty history
    with pytest.raises(ValueError, match="candidate"):
        run(fused, batch, None)
    late = transact(items, early_fusion=False).eval()
    assert late.d_model == D_ITEM + ACTION_DIM
    torch.testing.assert_close(run(late, batch, c1), run(late, batch, c2), atol=0, rtol=0)
    torch.testing.assert_close(run(late, batch, None), run(late, batch, c1), atol=0, rtol=0)


def target(items: FeatureEmbeddings, **kwargs: object) -> TransActEncoder:
    return transact(items, early_fusion=False, target_attention=True, **kwargs)


def test_target_attention_is_the_softmax_over_the_real_events_of_the_transformer_outputs() -> None:
    items = make_items()
    enc = target(items).eval()
    batch, cand = make_batch(), candidates(items)
    out = run(enc, batch, cand)
    d = enc.d_model
    assert d == D_ITEM + ACTION_DIM and out.shape == (len(LENGTHS), 5 * d) == (len(LENGTHS), enc.out_dim)
    for row, n in enumerate(LENGTHS):
        one = {k: v[row : row + 1] for k, v in batch.items()}
        cache = enc.encode_history(*inputs(one))
        assert cache.states is not None and cache.output is not None
        h = cache.states[0, L - n :]  # (n, d): the outputs at the real events
        q = enc.query_proj(cand[row])  # type: ignore[misc]
        alpha = torch.softmax(h @ q / d**0.5, dim=0)  # (n,)
        expected = (alpha[:, None] * h).sum(0) if n else torch.zeros(d)
        torch.testing.assert_close(out[row, 4 * d :], expected)
        torch.testing.assert_close(out[row, : 4 * d], cache.output[0])  # k recent ⊕ max-pool unchanged
    assert (out[2] == 0).all() and torch.isfinite(out).all()


def test_target_attention_keeps_the_plain_read_out_and_depends_on_the_candidate() -> None:
    items = make_items()
    plain, late = transact(items, early_fusion=False).eval(), target(items).eval()
    missing = late.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["query_proj.weight"]  # W_q is the only new weight
    batch, c1, c2 = make_batch(), candidates(items, seed=1), candidates(items, seed=2)
    a, b = run(late, batch, c1), run(late, batch, c2)
    torch.testing.assert_close(a[:, : plain.out_dim], run(plain, batch, c1))
    diff = ~torch.isclose(a, b).all(1)
    assert diff.tolist() == [True, True, False, False, True]  # 1 event: α = 1 whatever the candidate
    torch.testing.assert_close(run(late, left_pad(batch, 4), c1), a, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="candidate"):
        run(late, batch, None)


# -- serving -------------------------------------------------------------------------------


FUSIONS = {
    "early": {"early_fusion": True},
    "none": {"early_fusion": False},
    "target": {"early_fusion": False, "target_attention": True},
}


@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("user", [0, 1, 2])  # full, partial, empty history
def test_score_candidates_equals_the_batched_forward(fusion: str, user: int) -> None:
    items = make_items()
    enc = transact(items, time_encoding=True, **FUSIONS[fusion]).eval()
    one = {k: v[user : user + 1] for k, v in make_batch().items()}
    cands = candidates(items, 7)
    with torch.no_grad():
        served = enc.score_candidates(enc.encode_history(*inputs(one)), cands)
        batched = run(enc, {k: v.expand(7, -1) for k, v in one.items()}, cands)
    assert served.shape == (7, enc.out_dim)
    torch.testing.assert_close(served, batched, atol=1e-5, rtol=1e-5)
    if fusion != "none" and user != 2:
        assert not torch.allclose(served[0], served[1])
    with pytest.raises(ValueError, match="batch of 5"):
        enc.encode_history(*inputs(make_batch()))


# -- gradients, export, construction -------------------------------------------------------


@pytest.mark.parametrize("kind", ["transact", "transact-target", "din"])
def test_gradients_reach_used_item_rows_and_every_parameter(kind: str) -> None:
    items = make_items()
    model = {
        "transact": lambda: transact(items, recent_mask=None),
        "transact-target": lambda: target(items, recent_mask=None),
        "din": lambda: din(items),
    }[kind]()
    model.train()
    batch, cand_ids = make_batch(), torch.tensor([40, 41, 42, 43, 44])
    run(model, batch, items.lookup("item", cand_ids)).square().sum().backward()
    grad = items.table("item").weight.grad
    assert grad is not None
    used = torch.zeros(N_ITEMS, dtype=torch.bool)
    used[batch["hist/h/items"][batch["hist/h/mask"]]] = True
    # row 2's history is empty: its candidate is unused; with target attention so is row 3's
    # (one event: α = 1 whatever the candidate)
    used[cand_ids[[0, 1, 4] if kind == "transact-target" else [0, 1, 3, 4]]] = True
    assert (grad[used].abs().sum(1) > 0).all()
    assert (grad[~used] == 0).all()  # padding slots and unused rows get nothing
    own = [(n, p) for n, p in model.named_parameters() if not n.startswith("items.")]
    for name, p in own:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["transact", "transact-target", "din"])
def test_export_in_eval_mode(kind: str) -> None:
    items = make_items()
    model = {
        "transact": lambda: transact(items, time_encoding=True),
        "transact-target": lambda: target(items, time_encoding=True),
        "din": lambda: din(items),
    }[kind]().eval()
    batch, cand = make_batch(), candidates(items).detach()  # inputs are data, not graph nodes
    program = torch.export.export(model, inputs(batch), {"candidate": cand})
    other, other_cand = make_batch(seed=5), candidates(items, seed=5).detach()
    torch.testing.assert_close(program.module()(*inputs(other), candidate=other_cand), run(model, other, other_cand))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"recent_mask": -1},
        {"recent_mask": True},
        {"recent_mask": "3"},
        {"num_heads": 3},
        {"k_recent": -1},
        {"dropout": 1.0},
        {"num_layers": 0},
        {"d_model": 0},
        {"target_attention": True},  # with early fusion (the default)
    ],
)
def test_bad_hyperparameters_name_the_value(kwargs: dict[str, object]) -> None:
    key = next(iter(kwargs))
    with pytest.raises(ValueError, match=key):
        transact(make_items(), **kwargs)


def test_time_encoding_without_times_is_a_clear_error() -> None:
    items = make_items()
    batch = make_batch()
    del batch["hist/h/times"]
    with pytest.raises(ValueError, match="needs the history's times"):
        run(transact(items, time_encoding=True), batch, candidates(items))
    with pytest.raises(ValueError, match="recent_mask=3600.0 is in seconds"):
        run(transact(items, recent_mask=3600.0).train(), batch, candidates(items))
    run(transact(items, recent_mask=3600.0).eval(), batch, candidates(items))  # eval: no mask, no times


def test_no_actions() -> None:
    items = make_items()
    batch = make_batch()
    del batch["hist/h/actions"]
    enc = TransActEncoder(items, "item", 0).eval()
    assert run(enc, batch, candidates(items)).shape == (len(LENGTHS), 4 * 2 * D_ITEM)
    assert run(DINAttention(items, "item", 0), batch, candidates(items)).shape == (len(LENGTHS), D_ITEM)


@pytest.mark.parametrize("module", [ranker.nn.transact, ranker.nn.din])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_max_len_equals_cutting_the_history_to_its_most_recent_events() -> None:
    items = make_items()
    torch.manual_seed(3)
    full = transact(items).eval()
    short = transact(items, max_len=2).eval()
    short.load_state_dict(full.state_dict())
    batch, cand = make_batch(), candidates(items)
    cut = {k: v[:, -2:] if k.startswith("hist/") else v for k, v in batch.items()}
    torch.testing.assert_close(run(short, batch, cand), run(full, cut, cand))
    assert not torch.allclose(run(short, batch, cand), run(full, batch, cand))


def test_mean_pool_recent_appends_the_mean_of_the_k_most_recent_events() -> None:
    from ranker.nn.history import MeanPoolHistory

    items = make_items()
    torch.manual_seed(3)
    enc = MeanPoolHistory(items, "item", N_ACTIONS, ACTION_DIM, recent=2)
    batch = make_batch()
    out = run(enc, batch)
    assert out.shape == (len(LENGTHS), 2 * (D_ITEM + ACTION_DIM))
    events = torch.cat([items.lookup("item", batch["hist/h/items"]), enc.action_table(batch["hist/h/actions"])], dim=-1)
    for row, n in enumerate(LENGTHS):
        real = events[row, L - n :]
        whole = real.mean(0) if n else torch.zeros(D_ITEM + ACTION_DIM)
        last = real[-2:].mean(0) if n else torch.zeros(D_ITEM + ACTION_DIM)  # n = 1: that one event
        torch.testing.assert_close(out[row], torch.cat([whole, last]))
    torch.testing.assert_close(run(enc, left_pad(batch, 3)), out)  # padding never matters
    with pytest.raises(ValueError, match="recent"):
        MeanPoolHistory(items, "item", N_ACTIONS, ACTION_DIM, recent=0)

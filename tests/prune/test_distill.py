"""Distillation recovery: masks fixed, loss goes down, DDP equals one process."""

import copy

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import torch
from sparsegemm import prune
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")


def _student_and_teacher(seed=0):
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                            nn.Linear(32, 4))
    student = copy.deepcopy(teacher)
    prune.prune_model(student, 0.7, scope="layer", skip_first_last=False)
    return student, teacher


def _global_batches(count=6, rows=8, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, 8, generator=generator) for _ in range(count)]


def _masks(model):
    return {n: m.weight_mask.clone() for n, m in model.named_modules() if hasattr(m, "weight_mask")}


def _check_masks_held(student, masks):
    for name, module in student.named_modules():
        if name in masks:
            assert torch.equal(module.weight_mask, masks[name])
            assert (module.weight_orig[masks[name] == 0] == 0).all(), name


def test_distillation_lowers_the_loss_and_keeps_masks():
    student, teacher = _student_and_teacher()
    masks = _masks(student)
    teacher_state = copy.deepcopy(teacher.state_dict())
    losses = prune.distill(student, teacher, _global_batches(), epochs=20, lr=1e-2,
                           weight_decay=0.1, hidden_weight=0.5)
    assert len(losses) == 120
    assert sum(losses[-6:]) < 0.5 * sum(losses[:6])
    _check_masks_held(student, masks)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key])


def test_a_cached_teacher_runs_once_per_batch_and_trains_the_same():
    batches = _global_batches()
    plain_student, teacher = _student_and_teacher()
    cached_student, _ = _student_and_teacher()
    teacher_calls = []
    teacher.register_forward_hook(lambda *args: teacher_calls.append(1))
    settings = dict(epochs=3, lr=1e-2, hidden_weight=0.5)
    plain = prune.distill(plain_student, teacher, batches, **settings)
    assert len(teacher_calls) == 18
    teacher_calls.clear()
    cached = prune.distill(cached_student, teacher, batches, cache_teacher=True, **settings)
    assert len(teacher_calls) == 6
    assert cached == plain
    for key, value in plain_student.state_dict().items():
        assert torch.equal(value, cached_student.state_dict()[key]), key
    with pytest.raises(TypeError, match="sequence of batches"):
        prune.distill(cached_student, teacher, iter(batches), cache_teacher=True)


def test_distill_stops_at_max_steps_and_rejects_bad_arguments():
    student, teacher = _student_and_teacher()
    assert len(prune.distill(student, teacher, _global_batches(), epochs=5, max_steps=3)) == 3
    with pytest.raises(ValueError, match="epochs"):
        prune.distill(student, teacher, [], epochs=0)
    with pytest.raises(ValueError, match="hidden_weight"):
        prune.distill(student, teacher, [], hidden_weight=-1)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from sparsegemm.prune.distill import _cosine_factor

    assert _cosine_factor(0.0, 0.1) < 0.05
    assert _cosine_factor(0.1, 0.1) == pytest.approx(1.0)
    assert _cosine_factor(0.55, 0.1) == pytest.approx(0.5)
    assert _cosine_factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    factors = [_cosine_factor(i / 100, 0.1) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_cosine_schedule_sets_the_rate_per_step_and_restores_it():
    student, teacher = _student_and_teacher()
    optimizer = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.1)
    seen = []
    step = optimizer.step

    def recording_step(*args, **kwargs):
        seen.append(optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    optimizer.step = recording_step
    prune.distill(student, teacher, _global_batches(), epochs=4, max_steps=20,
                  optimizer=optimizer, schedule="cosine", warmup=0.1)
    assert len(seen) == 20
    assert seen[0] < seen[2] and max(seen) <= 0.1 + 1e-12 and seen[-1] < 0.01
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_frozen_module_types_are_not_trained():
    student, teacher = _student_and_teacher()
    student = nn.Sequential(nn.LayerNorm(8), student)
    teacher = nn.Sequential(nn.LayerNorm(8), teacher)
    linears = [m for m in student.modules() if isinstance(m, nn.Linear)]

    def effective(m):  # masked weights (apply_masks zeroes weight_orig's pruned entries)
        return [(m.weight_orig * m.weight_mask).detach(), m.bias.detach()]

    before = [t.clone() for m in linears for t in effective(m)]
    norm_before = student[0].weight.clone()
    prune.distill(student, teacher, _global_batches(), epochs=2, lr=1e-2, frozen=(nn.Linear,))
    after = [t for m in linears for t in effective(m)]
    assert all(torch.equal(a, b) for a, b in zip(after, before))
    assert not torch.equal(student[0].weight, norm_before)  # the rest trains
    assert all(p.requires_grad for p in student.parameters())  # restored
    with pytest.raises(ValueError, match="no trainable"):
        prune.distill(student, teacher, _global_batches(), frozen=(nn.Linear, nn.LayerNorm))
    assert all(p.requires_grad for p in student.parameters())


def test_bad_schedule_arguments_are_refused():
    student, teacher = _student_and_teacher()
    with pytest.raises(ValueError, match="schedule"):
        prune.distill(student, teacher, _global_batches(), schedule="linear")
    with pytest.raises(ValueError, match="warmup"):
        prune.distill(student, teacher, _global_batches(), schedule="cosine", warmup=1.0)


def _ddp_worker(rank, world_size, init_file, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        torch.set_num_threads(1)
        student, teacher = _student_and_teacher()
        share = [batch.chunk(world_size)[rank] for batch in _global_batches()]
        prune.distill(student, teacher, share, epochs=3, lr=1e-2, hidden_weight=0.5)
        if rank == 0:
            torch.save({"state": student.state_dict()}, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes that import torch
def test_two_process_ddp_equals_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "result.pt")),
             nprocs=2, join=True)
    distributed = torch.load(tmp_path / "result.pt")["state"]
    student, teacher = _student_and_teacher()
    masks = _masks(student)
    prune.distill(student, teacher, _global_batches(), epochs=3, lr=1e-2, hidden_weight=0.5)
    single = student.state_dict()
    assert set(distributed) == set(single)
    for key in single:
        torch.testing.assert_close(distributed[key], single[key], rtol=1e-5, atol=1e-6)
    student.load_state_dict(distributed)
    _check_masks_held(student, masks)

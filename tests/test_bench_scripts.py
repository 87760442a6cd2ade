"""The GFPGAN benchmark and profiler scripts run end to end (CPU, small networks) and print their JSON reports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def _last_json(args: list[str]) -> dict:
    run = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_bench_enhance_smoke_reports_both_networks():
    report = _last_json(["scripts/bench_enhance.py", "--smoke"])
    models = {r["model"].split("-")[0] for r in report["results"]}
    assert models == {"gfpgan", "modnet"}
    assert all((r.get("faces_per_s") or r.get("frames_per_s")) > 0 for r in report["results"])


def test_profile_enhance_cpu_run_accounts_the_batch():
    report = _last_json(["scripts/profile_enhance.py", "--device", "cpu", "--batch", "2", "--size", "64", "--top", "3"])
    assert report["batch"] == 2 and report["size"] == 64
    assert report["kernel_ms"] > 0 and report["groups_ms"]["cpu_ops"] == report["kernel_ms"]


def test_kernel_groups():
    from profile_enhance import kernel_group

    assert kernel_group("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x256x64") == "conv"
    assert kernel_group("triton_poi_fused__to_copy_add_addcmul_leaky_relu_12") == "fused_pointwise"
    assert kernel_group("_tap_sums_kernel") == kernel_group("_phase_gather_kernel") == "fused_pointwise"
    assert kernel_group("nvjet_sm90_hsh_192x192_64x4_2x1_v_bz_coopB_TNN") == "conv"  # a cuBLAS matrix product
    assert kernel_group("void at::native::elementwise_kernel<128, 4, direct_copy_kernel_cuda>") == "other"


# rows as the lent H100's nvidia-smi printed them during a timed GFPGAN loop (query clocks.current.sm, power.draw,
# clocks_event_reasons.active; csv, noheader), plus the junk a stopped sampler can leave
SMI_ROWS = ["1980 MHz, 445.13 W, 0x0000000000000004", "1710 MHz, 580.18 W, 0x0000000000000004",
            "1545 MHz, 686.43 W, 0x0000000000000004", "1605 MHz, 698.92 W, 0x0000000000000004",
            "1950 MHz, 637.68 W, 0x0000000000000000", "[N/A], [N/A], [N/A]", "1980 MH"]


def test_clock_samples_show_a_power_capped_run():
    from bench_enhance import summarize_clock_samples

    s = summarize_clock_samples(SMI_ROWS)
    assert s == {"samples": 5, "sm_clock_mhz_min": 1545.0, "sm_clock_mhz_median": 1710.0, "power_w_max": 698.92,
                 "clock_reasons": ["sw_power_cap"]}
    assert summarize_clock_samples(["1410, 300.5, 0x0000000000000001"])["clock_reasons"] == ["gpu_idle"]
    assert summarize_clock_samples([]) == summarize_clock_samples(["[N/A], [N/A], [N/A]"]) == {}


def test_clock_sampler_runs_nvidia_smi_around_the_loop(tmp_path, monkeypatch):
    """A stand-in nvidia-smi on PATH (prints rows until stopped): the sampler starts it with the query, stops it when
    the loop ends and summarises what it printed; no nvidia-smi or a CPU device: an empty summary."""
    from bench_enhance import ClockSampler

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n"
                    "while true; do echo '1545 MHz, 686.43 W, 0x0000000000000004'; sleep 0.05; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with ClockSampler("cuda:1") as gpu:
        time.sleep(0.5)
    assert gpu.summary["samples"] >= 2 and gpu.summary["clock_reasons"] == ["sw_power_cap"]
    args = (tmp_path / "args").read_text().split()
    assert args[:2] == ["-i", "1"] and "--query-gpu=clocks.current.sm,power.draw,clocks_event_reasons.active" in args
    with ClockSampler("cpu") as cpu:
        pass
    assert cpu.summary == {}
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with ClockSampler("cuda:0") as none:
        pass
    assert none.summary == {}


def test_sampler_asks_nvidia_smi_for_the_card_torch_uses(monkeypatch):
    from bench_enhance import smi_gpu_id

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, GPU-8f3a1c2e")
    assert smi_gpu_id(0) == "2" and smi_gpu_id(1) == "GPU-8f3a1c2e"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert smi_gpu_id(1) == "1"


def test_eval_chat_judges_answers_length_and_endings():
    """scripts/eval_chat.py chose the chat defaults (README "Replies made for speaking"); its checks are these."""
    import eval_chat

    assert eval_chat.judge("Paris is the capital of France.", r"\bparis\b", 3) == \
        {"correct": True, "short": True, "ends": True}
    assert eval_chat.judge("Lyon, I think", r"\bparis\b", 3) == {"correct": False, "short": True, "ends": False}
    four = "One. Two. Three. Four."
    assert eval_chat.judge(four, None, 3)["short"] is False and eval_chat.judge(four, None, 4)["short"] is True
    assert eval_chat.judge(" ".join(["word"] * 61) + ".", None, 3)["short"] is False  # over 60 words
    kinds = {kind for _, _, kind in eval_chat.PROMPTS}
    assert len(eval_chat.PROMPTS) == 20 and kinds == {"answers", "remembers", "open"}
    assert all(len(turns) == 2 for turns, _, kind in eval_chat.PROMPTS if kind == "remembers")


def test_bench_official_asks_for_the_official_code():
    """bench_official.py times only networks whose official code is given; without any, or with a folder that
    is not there, it stops at once and says how to stage the code (the official files are never committed)."""
    for args, expected in (([], "give at least one of --official-eat"),
                           (["--official-gfpgan", "no/such/dir"], "stage_official.sh")):
        run = subprocess.run([sys.executable, "scripts/bench_official.py", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2 and expected in run.stderr, run.stderr[-2000:]


def test_bench_serve_gpu_smoke_batches_the_enhancement_of_concurrent_sessions():
    """A real local Ray instance and Serve deployment (stand-in networks on the CPU): four sessions at once get
    their frames enhanced in shared calls, every frame comes back, and the report compares with one at a time."""
    report = _last_json(["scripts/bench_serve_gpu.py", "--smoke", "--sessions", "1,4", "--clip-s", "2",
                         "--streams", "default,per-thread"])
    one, four, *per_thread = report["runs"]
    assert [(r["sessions"], r["streams"]) for r in per_thread] == [(1, "per-thread"), (4, "per-thread")]
    assert report["max_real_time_by_streams"] == {"default": 4, "per-thread": 4}
    assert (one["sessions"], four["sessions"]) == (1, 4)
    assert one["frames"] == 50 and four["frames"] == 200  # 2 s at 25 fps per session
    assert one["clips_per_call_max"] == 1 and four["clips_per_call_max"] >= 2
    assert four["enhance_calls"] < 4 * one["enhance_calls"]
    assert len(four["rtf"]) == 4 and report["max_real_time_sessions"] == 4
    assert report["one_at_a_time"]["aggregate_fps"] > 0 and four["gain_over_one_at_a_time"] > 0

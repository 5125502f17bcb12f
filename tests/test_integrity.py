"""Issue 26: weights must fit the model, weight files are verified against checksums.json, damaged
artifacts and hostile folders are one line, training says what it drops, a full disk during a
checkpoint is one line that leaves nothing temporary, serve asks for a login on a network."""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from medcap.errors import MedcapError
from medcap.models import weights as weights_mod
from medcap.models.weights import CHECKSUMS_FILE

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("notice:", "warning:"))]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synth_small):
    from conftest import train_tiny_models

    return train_tiny_models(synth_small, tmp_path_factory.getbasetemp() / "medcap-tiny-models")


@pytest.fixture
def detector(tiny, tmp_path):
    return Path(shutil.copytree(tiny.concepts, tmp_path / "det"))


@pytest.fixture
def captioner(tiny, tmp_path):
    return Path(shutil.copytree(tiny.captions, tmp_path / "cap"))


def _flip_a_bit_mid_tensor(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # the header is at the start: the middle is tensor data
    path.write_bytes(bytes(data))


# -- 1. weights must fit the model -------------------------------------------------------------
def test_a_captioner_folder_with_another_models_weights_is_one_line_in_predict_and_serve(
        captioner, tmp_path, cli, synth_small):
    from medcap.models.captioner import Captioner

    other = Captioner.from_scratch("tiny", ["a chest x-ray of the left lung", "an mri of the brain"], image_size=32,
                                   seed=3)
    other.save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", captioner / "model.safetensors")
    weights_mod.write_checksums(captioner)  # the checksums fit: the architecture check must catch it
    rc, _, err = cli("predict", "captions", "--model", captioner, "--images", synth_small / "test",
                     "--out", tmp_path / "c.csv")
    line = _one_line(err)
    assert rc == 2 and "do not fit the captioner" in line and str(captioner) in line and "first:" in line
    assert not (tmp_path / "c.csv").exists()
    rc, _, err = cli("serve", "--captions", captioner, "--port", "1")
    assert rc == 2 and "do not fit the captioner" in _one_line(err)


def test_a_detector_with_another_architectures_weights_names_count_and_first_key(detector, tmp_path):
    from safetensors.torch import load_file, save_file

    from medcap.models.concept_detector import ConceptDetector

    state = load_file(str(detector / "model.safetensors"))
    state["extra.weight"] = state[next(iter(state))].clone()
    del state[sorted(state)[0]]
    save_file(state, str(detector / "model.safetensors"))
    weights_mod.write_checksums(detector)
    with pytest.raises(MedcapError, match=r"1 missing \(first: .*1 unexpected \(first: extra.weight\)") as e:
        ConceptDetector.from_pretrained(detector)
    assert e.value.file == str(detector)


# -- 2. integrity ------------------------------------------------------------------------------
def test_a_bit_flip_inside_a_detector_tensor_names_the_file_and_no_verify_skips_the_check(detector, tmp_path,
                                                                                        cli, synth_small):
    assert json.loads((detector / CHECKSUMS_FILE).read_text())["files"]["model.safetensors"]["size"] > 0
    _flip_a_bit_mid_tensor(detector / "model.safetensors")
    rc, _, err = cli("predict", "concepts", "--model", detector, "--images", synth_small / "test",
                     "--out", tmp_path / "s.csv")
    line = _one_line(err)
    assert rc == 2 and str(detector / "model.safetensors") in line and "sha256" in line
    rc, _, err = cli("predict", "concepts", "--model", detector, "--images", synth_small / "test",
                     "--out", tmp_path / "s.csv", "--no-verify")
    assert rc == 0, err
    rc, _, err = cli("--no-verify", "predict", "concepts", "--model", detector, "--images", synth_small / "test",
                     "--out", tmp_path / "s.csv")
    assert rc == 0, err


def test_a_bit_flip_inside_a_captioner_tensor_names_the_file(captioner):
    from medcap.models.captioner import Captioner

    _flip_a_bit_mid_tensor(captioner / "model.safetensors")
    with pytest.raises(MedcapError, match="sha256") as e:
        Captioner.from_pretrained(captioner)
    assert e.value.file == str(captioner / "model.safetensors")


@pytest.fixture
def count_hashing(monkeypatch, tmp_path):
    """The files hashed by each load; the verification cache starts empty and is re-read from disk."""
    monkeypatch.setattr(weights_mod, "_remembered", None)
    monkeypatch.setenv("MEDCAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDCAP_VERIFY", raising=False)
    hashed: list[Path] = []
    real = weights_mod._hash_range
    monkeypatch.setattr(weights_mod, "_hash_range", lambda path, *span: hashed.append(path) or real(path, *span))
    return hashed


def test_a_verified_file_is_hashed_again_only_when_written_since(detector, count_hashing, monkeypatch):
    import time

    from medcap.models.concept_detector import ConceptDetector

    monkeypatch.setattr(weights_mod, "_RACY_NS", 0)  # the file was just saved: no racy window here
    weights_file = detector / "model.safetensors"
    ConceptDetector.from_pretrained(detector)
    assert weights_file in count_hashing
    count_hashing.clear()
    monkeypatch.setattr(weights_mod, "_remembered", None)  # as a new process: the cache is read from disk
    ConceptDetector.from_pretrained(detector)
    assert count_hashing == []
    monkeypatch.setenv("MEDCAP_VERIFY", "full")
    ConceptDetector.from_pretrained(detector)
    assert weights_file in count_hashing
    monkeypatch.delenv("MEDCAP_VERIFY")
    time.sleep(0.05)  # past the kernel's coarse clock tick
    st = weights_file.stat()
    _flip_a_bit_mid_tensor(weights_file)
    os.utime(weights_file, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: the ctime still moved
    with pytest.raises(MedcapError, match="sha256 differs") as e:
        ConceptDetector.from_pretrained(detector)
    assert e.value.file == str(weights_file)


def test_a_failed_write_of_the_verification_cache_only_loses_the_shortcut(detector, count_hashing, monkeypatch):
    from medcap.models.concept_detector import ConceptDetector

    monkeypatch.setattr(weights_mod, "_RACY_NS", 0)
    cache = Path(os.environ["MEDCAP_CACHE_DIR"])
    real_fdopen = os.fdopen

    def full_disk(fd, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", full_disk)
    ConceptDetector.from_pretrained(detector)  # loads: the cache could not be written
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert not (cache / "verified.json").exists() and list(cache.glob(".*tmp")) == []


def test_a_file_written_just_before_its_check_is_not_remembered(detector, count_hashing):
    from medcap.models.concept_detector import ConceptDetector

    (detector / "model.safetensors").write_bytes((detector / "model.safetensors").read_bytes())  # written now
    for _ in range(2):
        count_hashing.clear()
        ConceptDetector.from_pretrained(detector)
        assert detector / "model.safetensors" in count_hashing  # racily clean: hashed every time


def test_a_folder_saved_before_checksums_loads_with_a_notice_given_once(detector, capsys):
    from medcap.models.concept_detector import ConceptDetector

    (detector / CHECKSUMS_FILE).unlink()
    ConceptDetector.from_pretrained(detector)
    ConceptDetector.from_pretrained(detector)
    assert capsys.readouterr().err.count(f"notice: {detector} has no {CHECKSUMS_FILE}") == 1


# -- kNN index, fit.json ------------------------------------------------------------------------
@pytest.fixture
def ensemble(detector, tmp_path):
    import torch

    from medcap.models.concept_detector import ConceptDetector
    from medcap.models.ensemble import ConceptEnsemble, EnsembleConfig

    member = ConceptDetector.from_pretrained(detector)
    k = len(member.vocabulary.cuis)
    cfg = EnsembleConfig(members=["m0"], fusion="mean", knn={"k": 2, "temperature": 0.0, "embed_member": 0,
                                                                        "thresholds": {"global": 0.5}})
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(6, member.num_features, generator=g), dim=1).numpy()
    labels = (torch.rand(6, k, generator=g) > 0.5).float().numpy()
    ens = ConceptEnsemble(cfg, [member], emb, labels)
    ens.thresholds, ens.preprocessing = member.thresholds, member.preprocessing
    return ens.save_pretrained(tmp_path / "ens", [detector], fit={"chosen": "mean"})


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_knn_index_is_one_line_in_predict_and_serve(ensemble, damage, cli, synth_small, tmp_path):
    knn = ensemble / "knn.safetensors"
    if damage == "truncated":
        knn.write_bytes(knn.read_bytes()[:40])
        weights_mod.write_checksums(ensemble)  # even with fitting checksums: the reader says it is truncated
    else:
        _flip_a_bit_mid_tensor(knn)
    rc, _, err = cli("predict", "concepts", "--model", ensemble, "--images", synth_small / "test",
                     "--out", tmp_path / "s.csv")
    line = _one_line(err)
    assert rc == 2 and str(knn) in line
    rc, _, err = cli("serve", "--concepts", ensemble, "--port", "1")
    assert rc == 2 and str(knn) in _one_line(err)


def test_a_truncated_fit_json_is_one_line(ensemble):
    from medcap.models.ensemble import ConceptEnsemble

    ConceptEnsemble.from_pretrained(ensemble)
    fit = ensemble / "fit.json"
    fit.write_text(fit.read_text()[:5])
    with pytest.raises(MedcapError, match="truncated") as e:
        ConceptEnsemble.from_pretrained(ensemble)
    assert e.value.file == str(fit)


# -- 5. folder walks --------------------------------------------------------------------------
def test_a_symlink_loop_in_an_image_folder_is_one_line_in_predict_and_data_check(tiny, cli, synth_small, tmp_path):
    data = Path(shutil.copytree(synth_small, tmp_path / "data"))
    link = data / "test" / "loop"
    os.symlink("loop", link)
    rc, _, err = cli("predict", "concepts", "--model", tiny.concepts, "--images", data / "test",
                     "--out", tmp_path / "s.csv")
    assert rc == 2 and "symbolic link loop" in _one_line(err) and str(link) in err
    rc, out, err = cli("data", "check", data, "--no-images")
    assert rc == 2 and "symbolic link loop" in _one_line(err), out + err


def test_a_folder_walk_through_a_link_to_a_parent_is_one_line_not_endless(tmp_path):
    from medcap.fileio import walk_dirs

    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink("..", tmp_path / "a" / "b" / "up")
    with pytest.raises(MedcapError, match="symbolic link loop") as e:
        list(walk_dirs(tmp_path / "a"))
    assert e.value.file == str(tmp_path / "a" / "b" / "up")


# -- 6. training says what it drops -----------------------------------------------------------
def _with_orphan_rows(src: Path, dst: Path, n: int) -> Path:
    data = Path(shutil.copytree(src, dst))
    with open(data / "train_concepts.csv", "a", newline="") as f:
        w = csv.writer(f)
        for i in range(n):
            w.writerow([f"../../outside/real_{i}" if i % 2 else f"ghost_{i}", f"C99999{i % 10:02d}"])
    return data


def test_training_refuses_when_over_one_percent_of_the_rows_have_no_image(cli, synth_small, tmp_path):
    data = _with_orphan_rows(synth_small, tmp_path / "data", 20)
    rc, out, err = cli("train", "concepts", "--config", "demo", "--data", data, "--out", tmp_path / "run",
                       "--set", "image_size=32", "--set", "epochs=1", "--set", "progress=false")
    assert rc == 2, err
    assert "20 of 68 label rows" in err and "10 have no image" in err and "10 have a malformed" in err
    assert "allow_missing_images" in err and not (tmp_path / "run" / "model").exists()
    summary = [ln for ln in err.splitlines() if "label rows used" in ln]
    assert len(summary) == 1 and "concepts appear only in dropped rows" in summary[0]


def test_drops_summary_counts_path_like_ids_as_malformed_and_lost_concepts(synth_small, tmp_path):
    from medcap.data.dataset import read_dataset
    from medcap.data.drops import check_drops

    data = _with_orphan_rows(synth_small, tmp_path / "data", 4)
    lines: list[str] = []
    drops = check_drops(read_dataset(data).split("train"), allow=True, log=lines.append)
    assert len(drops.missing) == 2 and len(drops.malformed) == 2 and drops.rows == 52
    assert "C9999900" in drops.lost_concepts and len(lines) == 1
    with pytest.raises(MedcapError, match="4 of 52"):
        check_drops(read_dataset(data).split("train"), allow=False, log=lines.append)


def test_data_check_prints_at_most_twenty_problems_per_kind(cli, synth_small, tmp_path):
    data = _with_orphan_rows(synth_small, tmp_path / "data", 50)
    rc, out, _ = cli("data", "check", data, "--no-images")
    assert rc == 1
    kinds = [ln for ln in out.splitlines() if "no image" in ln or "image file" in ln]
    assert 0 < len(kinds) <= 20, out
    assert "... and 30 more" in out


# -- 3. a full disk during a checkpoint -------------------------------------------------------
@pytest.mark.parametrize("fault", ["enospc", "torch-writer"])
def test_a_full_disk_during_a_checkpoint_is_one_line_leaves_nothing_temporary_and_resumes(fault, tmp_path,
                                                                                         monkeypatch):
    import accelerate

    from medcap.training.engine import Trainer
    from test_faults import ToyTask, _cfg

    real = accelerate.Accelerator.save_state
    calls = []

    def full_disk(self, output_dir=None, **kw):
        calls.append(output_dir)
        if len(calls) == 2:  # the second epoch's checkpoint: the first is complete on disk
            Path(output_dir, "model.safetensors").write_bytes(b"\0" * 100)  # a partial write
            if fault == "enospc":
                raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "optimizer.bin"))
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real(self, output_dir, **kw)

    monkeypatch.setattr(accelerate.Accelerator, "save_state", full_disk)
    with pytest.raises((OSError, MedcapError)) as e:
        Trainer(ToyTask(), _cfg(epochs=3), tmp_path).fit()
    if fault == "torch-writer":
        assert "cannot write the checkpoint" in str(e.value) and "--resume" in str(e.value)
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch-000"]  # no .tmp left, the last complete kept
    monkeypatch.setattr(accelerate.Accelerator, "save_state", real)
    Trainer(ToyTask(), _cfg(epochs=3), tmp_path).fit(resume=True)
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch-002"]


# -- 9. serve on a network --------------------------------------------------------------------
def test_serve_auth_reads_the_password_file_and_warns_without_it_on_a_network(tmp_path, capsys):
    from medcap.webapp.server import is_loopback, read_auth

    (tmp_path / "pw").write_text("s3cret\n")
    assert read_auth(f"ann:{tmp_path / 'pw'}") == ("ann", "s3cret")
    with pytest.raises(MedcapError, match="USER:PASSWORD_FILE"):
        read_auth("ann")
    with pytest.raises(MedcapError, match="not found"):
        read_auth(f"ann:{tmp_path / 'none'}")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


# -- 8. bounded parsing -----------------------------------------------------------------------
@pytest.mark.parametrize("which", ["pred", "gold"])
def test_an_overlong_line_in_a_submission_or_label_file_is_one_line_naming_it(which, cli, synth_small, tmp_path,
                                                                           monkeypatch):
    import medcap.fileio

    monkeypatch.setattr(medcap.fileio, "MAX_LINE_BYTES", 4096)
    gold = Path(shutil.copy(synth_small / "test_concepts.csv", tmp_path / "gold.csv"))
    pred = Path(shutil.copy(gold, tmp_path / "pred.csv"))
    hostile = pred if which == "pred" else gold
    with open(hostile, "a") as f:
        f.write("x" * 10_000 + ",C0000001\n")
    rc, _, err = cli("evaluate", "concepts", "--gold", gold, "--pred", pred)
    line = _one_line(err)
    assert rc != 0 and "longer than 4,096 bytes" in line and str(hostile) in line


@pytest.mark.slow
def test_evaluate_of_a_200_mb_single_line_stays_under_300_mb(tmp_path, synth_small):
    import subprocess
    import sys

    pred = tmp_path / "pred.csv"
    with open(pred, "wb") as f:
        for _ in range(200):
            f.write(b"C" * (1 << 20))
    # VmHWM: this process's peak (ru_maxrss would carry pytest's own peak over fork + exec)
    code = ("import re, sys; from medcap.cli import main; rc = main(sys.argv[1:]); "
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", code, "evaluate", "concepts", "--gold",
                           str(synth_small / "test_concepts.csv"), "--pred", str(pred)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 2 and "longer than" in _one_line(done.stderr)
    assert int(done.stdout.split()[-1]) < 300 * 1024, done.stdout  # KiB


def test_a_file_system_that_cannot_map_files_is_hashed_by_reading(detector, count_hashing, monkeypatch):
    import mmap

    from medcap.models.concept_detector import ConceptDetector

    def no_mmap(*args, **kwargs):
        raise OSError(errno.ENODEV, "No such device")  # what mmap says on a mount that cannot map

    monkeypatch.setattr(mmap, "mmap", no_mmap)
    digest, size, blocks = weights_mod.file_sha256(detector / "model.safetensors", block=1 << 16)
    want = json.loads((detector / CHECKSUMS_FILE).read_text())["files"]["model.safetensors"]
    assert (digest, size) == (want["sha256"], want["size"]) and len(blocks) == -(-size // (1 << 16))
    ConceptDetector.from_pretrained(detector)
    _flip_a_bit_mid_tensor(detector / "model.safetensors")
    with pytest.raises(MedcapError, match="sha256 differs"):
        ConceptDetector.from_pretrained(detector)

"""Library mode: a tree in, a mirrored tree out; bad files named, second run skips."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from rtupscale.config import Config
from rtupscale.library import upscale_library
from tests.signals import tone

RATE = 44100


def _tree(root: Path) -> None:
    x = tone(440, RATE, 2 * RATE, amp=0.3)
    (root / "a" / "b").mkdir(parents=True)
    sf.write(root / "a" / "one.wav", x.T, RATE)
    sf.write(root / "a" / "b" / "two.flac", x.T, RATE, subtype="PCM_16")
    for name, codec in (("three.mp3", []), ("four.ogg", []), ("five.m4a", []), ("six.opus", []),
                        ("seven.aiff", []), ("eight.m4a", ["-c:a", "alac"])):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(root / "a" / "one.wav"), *codec,
                        str(root / "a" / "b" / name)], check=True)
    (root / "a" / "bad.flac").write_bytes(b"fLaC this is not audio")
    (root / "a" / "cover.jpg").write_bytes(b"\xff\xd8\xff jpeg")
    (root / "notes.txt").write_text("hello")


def test_tree_mirrored_bad_named_second_run_skips(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    s = upscale_library(src, dest, Config(), runner=None, copy_other=True)
    assert sorted(p.relative_to(src).as_posix() for p in s.done) == [
        "a/b/eight.m4a", "a/b/five.m4a", "a/b/four.ogg", "a/b/seven.aiff", "a/b/six.opus", "a/b/three.mp3",
        "a/b/two.flac", "a/one.wav"]
    assert [p.name for p, _ in s.failed] == ["bad.flac"]
    outs = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert outs == ["a/b/eight.flac", "a/b/five.flac", "a/b/four.flac", "a/b/seven.flac", "a/b/six.flac",
                    "a/b/three.flac", "a/b/two.flac", "a/cover.jpg", "a/one.flac"]
    one, rate = sf.read(dest / "a" / "one.flac")
    assert rate == 4 * RATE and len(one) == 4 * 2 * RATE
    for lossless in ("seven", "eight"):  # AIFF and ALAC hold the same samples as one.wav
        y, rate = sf.read(dest / "a" / "b" / f"{lossless}.flac")
        assert rate == 4 * RATE and np.abs(y - one).max() < 1e-4, lossless
    y, rate = sf.read(dest / "a" / "b" / "six.flac")  # Opus decodes at 48 kHz
    assert rate == 4 * 48000 and len(y) == 4 * 2 * 48000
    assert not any(".partial" in p.name for p in dest.rglob("*"))
    again = upscale_library(src, dest, Config(), runner=None)
    assert len(again.done) == 0 and len(again.skipped) == 8 and len(again.failed) == 1


def test_cli_folder_nonzero_exit_and_summary(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    config = str(Path(__file__).parents[1] / "config.yaml")
    r = subprocess.run([sys.executable, "-m", "rtupscale.cli", "upscale", str(src), str(dest), "--model", "none",
                        "--config", config], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "bad.flac" in r.stderr and "failed" in r.stderr
    assert (dest / "a" / "one.flac").exists()
    r = subprocess.run([sys.executable, "-m", "rtupscale.cli", "upscale", str(src), str(dest), "--model", "none",
                        "--config", config, "--jobs", "2", "--json"], capture_output=True, text=True)
    summary = json.loads(r.stdout)
    assert r.returncode == 1 and summary["done"] == 0 and summary["skipped"] == 8
    assert [Path(f["file"]).name for f in summary["failed"]] == ["bad.flac"]


def test_same_base_name_is_a_named_failure(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    x = tone(440, RATE, RATE // 2, amp=0.3)
    sf.write(src / "song.wav", x.T, RATE)
    sf.write(src / "song.flac", x.T, RATE)
    s = upscale_library(src, tmp_path / "dest", Config())
    assert len(s.done) == 1 and len(s.failed) == 1 and "same output song.flac" in s.failed[0][1]


def _png(path: Path) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=2x2", "-frames:v", "1", str(path)],
                   check=True)
    return path.read_bytes()


def test_tags_and_art_carried_from_flac_mp3_ogg(tmp_path):
    from mutagen.flac import FLAC, Picture

    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    png = _png(tmp_path / "c.png")
    x = tone(440, RATE, RATE, amp=0.3)
    sf.write(src / "f.flac", x.T, RATE)
    f = FLAC(src / "f.flac")
    f.update({"title": "T1", "artist": "A", "album": "Al", "tracknumber": "3", "date": "2001",
              "replaygain_track_gain": "-6.00 dB", "musicbrainz_trackid": "abc-123"})
    pic = Picture()
    pic.type, pic.mime, pic.data = 3, "image/png", png
    f.add_picture(pic)
    f.save()
    meta = ["-metadata", "title=T2", "-metadata", "artist=B", "-metadata", "album=Al2", "-metadata", "track=5"]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src / "f.flac"), "-i", str(tmp_path / "c.png"),
                    "-map", "0:a", "-map", "1", "-c:v", "copy", "-disposition:v", "attached_pic", "-id3v2_version", "3",
                    *meta, str(src / "m.mp3")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src / "f.flac"), "-map", "0:a", *meta,
                    str(src / "o.ogg")], check=True)
    s = upscale_library(src, dest, Config())
    assert not s.failed and len(s.done) == 3
    out = FLAC(dest / "f.flac")
    assert out["title"] == ["T1"] and out["tracknumber"] == ["3"] and out["musicbrainz_trackid"] == ["abc-123"]
    assert out["replaygain_track_gain"] == ["-6.00 dB"] and out.pictures[0].data == png
    assert "rtupscale" in out["rtupscale"][0]
    mp3 = FLAC(dest / "m.flac")
    assert mp3["title"] == ["T2"] and mp3["artist"] == ["B"] and mp3["tracknumber"][0].startswith("5")
    assert mp3.pictures and mp3.pictures[0].data == png
    assert FLAC(dest / "o.flac")["album"] == ["Al2"]


def test_jobs_2_gives_the_same_files(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    one = upscale_library(src, tmp_path / "d1", Config())
    two = upscale_library(src, tmp_path / "d2", Config(), jobs=2)
    assert sorted(one.done) == sorted(two.done) and [p for p, _ in two.failed] == [p for p, _ in one.failed]
    for p in (tmp_path / "d1").rglob("*.flac"):
        assert np.array_equal(sf.read(p)[0], sf.read(tmp_path / "d2" / p.relative_to(tmp_path / "d1"))[0])


def test_m4a_aac_decodes_aligned_and_keeps_tags(tmp_path):
    from mutagen.flac import FLAC

    from rtupscale.library import decode_with_pyav

    src = tmp_path / "src"
    src.mkdir()
    sf.write(tmp_path / "x.wav", tone(440, RATE, RATE, amp=0.3).T, RATE)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "x.wav"), "-c:a", "aac", "-b:a", "192k",
                    "-metadata", "title=M", str(src / "a.m4a")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src / "a.m4a"), "-c:a", "pcm_f32le", str(tmp_path / "ref.wav")],
                   check=True)
    decode_with_pyav(src / "a.m4a", tmp_path / "dec.wav")
    ref, dec = sf.read(tmp_path / "ref.wav")[0], sf.read(tmp_path / "dec.wav")[0]
    x = sf.read(tmp_path / "x.wav")[0]
    assert dec.shape == x.shape  # delay and trailing padding both removed
    assert np.max(np.abs(ref[:len(dec)] - dec)) < 1e-6
    lags = [np.dot(dec[1000:40000, 0], x[1000 + k:40000 + k, 0]) for k in range(-5, 6)]
    assert int(np.argmax(lags)) - 5 == 0  # encoder delay removed: aligned with the source
    s = upscale_library(src, tmp_path / "dest", Config())
    assert not s.failed and FLAC(tmp_path / "dest" / "a.flac")["title"] == ["M"]


def test_jobs_out_of_range_is_a_user_error(tmp_path, capsys):
    from rtupscale import cli

    (tmp_path / "src").mkdir()
    assert cli.main(["upscale", str(tmp_path / "src"), str(tmp_path / "out"), "--jobs", "0"]) == cli.EXIT_USER
    assert "--jobs must be in 1..256, got 0" in capsys.readouterr().err


def _run_in_terminal(args: list[str]) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; (exit code, all it printed)."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, columns
    proc = subprocess.Popen([sys.executable, "-m", "rtupscale.cli", *args], stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_in_a_terminal_and_never_with_json(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    config = str(Path(__file__).parents[1] / "config.yaml")
    base = ["upscale", str(src), "--model", "none", "--config", config, "--jobs", "1"]
    code, shown = _run_in_terminal(base[:2] + [str(tmp_path / "d1")] + base[2:])
    assert code == 1
    assert "9/9 files, 1 failed" in shown and "h of audio" in shown
    assert "one.wav" in shown  # the file's own bar, under the batch's
    code, shown = _run_in_terminal(base[:2] + [str(tmp_path / "d2")] + base[2:] + ["--json"])
    assert code == 1 and "/9 files" not in shown and json.loads(shown.strip().splitlines()[-1])["done"] == 8
    r = subprocess.run([sys.executable, "-m", "rtupscale.cli", *base[:2], str(tmp_path / "d3"), *base[2:]],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "/9 files" not in r.stderr and "8 done" in r.stderr


def test_progress_counts_audio_hours_from_the_headers(tmp_path, capsys):
    src = tmp_path / "src"
    _tree(src)
    upscale_library(src, tmp_path / "dest", Config(), progress=True)
    err = capsys.readouterr().err
    # eight 2 s files have a length in their headers (bad.flac has none): 16 s = 0.004 h
    assert "0.004/0.004 h of audio" in err and "9/9 files, 1 failed" in err


def _lag(y: np.ndarray, ref: np.ndarray, most: int = 1200) -> int:
    """The lag of ``y`` against ``ref`` (``[frames, channels]``) by cross-correlation, in frames."""
    core = slice(most + 1000, len(ref) - most - 1000)
    corr = [np.dot(y[core.start + k:core.stop + k, 0], ref[core, 0]) for k in range(-most, most + 1)]
    return int(np.argmax(corr)) - most


def test_mp3_decodes_aligned_with_the_source(tmp_path):
    """libsndfile (mpg123) reads the LAME header: encoder delay and padding removed, so the
    decoded MP3 has the source's length at lag 0 (as ffmpeg decodes it)."""
    x = (tone(440, RATE, RATE, amp=0.3) + tone(2500, RATE, RATE, amp=0.1)).T
    sf.write(tmp_path / "x.wav", x, RATE)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "x.wav"), "-c:a", "libmp3lame", "-b:a", "192k",
                    str(tmp_path / "a.mp3")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "a.mp3"), "-c:a", "pcm_f32le",
                    str(tmp_path / "ref.wav")], check=True)
    dec, ref = sf.read(tmp_path / "a.mp3")[0], sf.read(tmp_path / "ref.wav")[0]
    assert dec.shape == x.shape == ref.shape
    assert _lag(dec, x) == 0
    assert np.abs(dec - ref).max() < 1e-5  # two decoders, one stream
    assert _lag(np.roll(dec, 7, axis=0), x) == 7  # the lag detector sees a shift


def test_opus_decodes_aligned_at_48k_and_alac_bit_exact(tmp_path):
    import soxr

    from rtupscale.library import decode_with_pyav

    x = (tone(440, RATE, RATE, amp=0.3) + tone(2500, RATE, RATE, amp=0.1)).T
    sf.write(tmp_path / "x.wav", x, RATE, subtype="PCM_16")
    for name, codec in (("a.opus", ["-c:a", "libopus", "-b:a", "160k"]), ("a.m4a", ["-c:a", "alac"])):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "x.wav"), *codec, str(tmp_path / name)],
                       check=True)
    decode_with_pyav(tmp_path / "a.opus", tmp_path / "opus.wav")
    opus, rate = sf.read(tmp_path / "opus.wav")
    assert rate == 48000 and opus.shape == (48000, 2)  # pre-skip and end trimming applied
    assert _lag(opus, soxr.resample(x, RATE, 48000)) == 0
    decode_with_pyav(tmp_path / "a.m4a", tmp_path / "alac.wav")
    alac, rate = sf.read(tmp_path / "alac.wav")
    pcm = sf.read(tmp_path / "x.wav")[0]
    assert rate == RATE and alac.shape == pcm.shape and np.array_equal(alac, pcm)  # lossless, scaled to +-1

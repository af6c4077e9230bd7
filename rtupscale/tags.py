"""Carry tags and cover art from a source file to an upscaled FLAC (mutagen).

Read with mutagen's "easy" interfaces, so ID3 (MP3), MP4 atoms (M4A) and Vorbis
comments (FLAC, Ogg) all give the same lowercase keys; written as FLAC Vorbis
comments, pictures as FLAC PICTURE blocks.
"""
from __future__ import annotations

import base64
from pathlib import Path

KEPT = ("title", "artist", "album", "albumartist", "tracknumber", "discnumber", "date", "genre",
        "replaygain_track_gain", "replaygain_track_peak", "replaygain_album_gain", "replaygain_album_peak",
        "musicbrainz_trackid", "musicbrainz_albumid", "musicbrainz_artistid", "musicbrainz_albumartistid",
        "musicbrainz_releasegroupid")
UPSCALED_TAG = "rtupscale"


def read_tags(path: Path) -> tuple[dict[str, list[str]], list]:
    """({key: [values]}, [mutagen.flac.Picture]) from ``path``; empty if it has none."""
    import mutagen
    from mutagen.flac import Picture

    easy = mutagen.File(path, easy=True)
    tags: dict[str, list[str]] = {}
    if easy is not None and easy.tags is not None:
        for key in KEPT:
            try:
                values = easy.tags[key]
            except (KeyError, ValueError):
                continue
            tags[key] = [str(v) for v in values]
    pictures = []
    raw = mutagen.File(path)
    if raw is not None:
        pictures.extend(getattr(raw, "pictures", []) or [])  # FLAC
        t = raw.tags
        if t is not None:
            if hasattr(t, "getall"):  # ID3
                for apic in t.getall("APIC"):
                    p = Picture()
                    p.type, p.mime, p.desc, p.data = apic.type, apic.mime, apic.desc, apic.data
                    pictures.append(p)
            elif "covr" in t:  # MP4
                for cover in t["covr"]:
                    p = Picture()
                    p.type, p.data = 3, bytes(cover)
                    p.mime = "image/png" if cover.imageformat == cover.FORMAT_PNG else "image/jpeg"
                    pictures.append(p)
            elif "metadata_block_picture" in t:  # Ogg Vorbis/Opus
                pictures.extend(Picture(base64.b64decode(v)) for v in t["metadata_block_picture"])
    return tags, pictures


def write_flac_tags(path: Path, tags: dict[str, list[str]], pictures: list, upscaled_by: str) -> None:
    """Replace ``path``'s Vorbis comments and pictures with these, plus ``RTUPSCALE=upscaled_by``."""
    from mutagen.flac import FLAC

    flac = FLAC(path)
    flac.delete()
    flac.clear_pictures()
    for key, values in tags.items():
        flac[key] = values
    flac[UPSCALED_TAG] = [upscaled_by]
    for picture in pictures:
        flac.add_picture(picture)
    flac.save()

"""Credentials are found by their shape as well as by value, in plain files and in a script's embedded archive."""

from __future__ import annotations

from src.kaggle.local.kernel_script import code_archive, render_script
from src.kaggle.local.secret_scan import find_leaks

# Shaped like real credentials, valid for nothing.
AWS_KEY = "AKIA" + "Q3EGRKZT7P5MWN2X"
HF_TOKEN = "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
DATABASE_URL = "postgresql://optuna:" + "s3cretpw@db.example.org/studies"
PRIVATE_KEY = "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow\n"


def test_shapes_are_found_without_knowing_the_values(tmp_path):
    (tmp_path / "config.yaml").write_text(f"thresholds:\n  storage: {DATABASE_URL}\n")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "util.py").write_text(f'AWS = "{AWS_KEY}"\nHF = "{HF_TOKEN}"\n')
    (tmp_path / "id_rsa").write_text(PRIVATE_KEY)
    (tmp_path / "clean.py").write_text('url = "postgresql://user@host/db"  # no password\nsha = "ab" * 32\n')
    assert find_leaks(tmp_path, {}) == [
        "code/util.py holds what looks like a AWS Access Key",
        "code/util.py holds what looks like a Hugging Face Token",
        "config.yaml holds what looks like a Basic Auth Credentials",
        "id_rsa holds what looks like a Private Key",
    ]


def test_a_shape_inside_an_embedded_archive_is_named_with_its_file(tmp_path):
    script = tmp_path / "kernel" / "script.py"
    script.parent.mkdir()
    script.write_text(render_script({}, code_archive({"inputs/settings.py": f'TOKEN = "{HF_TOKEN}"\n'.encode()})))
    assert find_leaks(script.parent, {}) == [
        "script.py embeds inputs/settings.py, which holds what looks like a Hugging Face Token"
    ]


def test_the_project_itself_ships_no_credential_shape():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert find_leaks(root / "src", {}) == [] and find_leaks(root / "configs", {}) == []

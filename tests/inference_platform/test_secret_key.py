"""The embedded default's generated secret key file."""

import threading

from inference_platform.secret_key import secret_key_from_file


def test_made_once_private_and_reused(tmp_path):
    path = tmp_path / "var" / "secret_key"
    key = secret_key_from_file(path)
    assert len(key) >= 50
    assert path.stat().st_mode & 0o777 == 0o600
    assert secret_key_from_file(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary file left behind


def test_processes_starting_together_share_one_key(tmp_path):
    path = tmp_path / "secret_key"
    start, keys = threading.Barrier(8), []

    def read():
        start.wait()
        keys.append(secret_key_from_file(path))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and set(keys) == {path.read_text().strip()}

"""run.storage as a cloud URI, against a real S3 API on localhost (moto's server, not a mock of
distune): a sweep writes its results and checkpoints to the bucket, `distune show` reads them
back, an interrupted sweep resumes from the bucket alone. Plus the path/URI helpers."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
from functools import partial
from pathlib import Path

import pytest

from conftest import experiment, interrupt_once
from distune.ops import storage
from distune.errors import DistuneError

# Ray's trial workers are processes started with this process's environment when Ray starts,
# so the credentials are set at collection, before any fixture starts Ray.
for _key, _value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_key, _value)

BUCKET = "distune-test"


@pytest.fixture(scope="module")
def s3():
    """(pyarrow filesystem on the bucket's server, URI query that points pyarrow at it)."""
    moto = pytest.importorskip("moto.server", reason="pip install 'moto[server]' (the test extra)")
    import pyarrow.fs as pafs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = moto.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                           allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    yield fs, f"?endpoint_override={host}:{port}&scheme=http"
    server.stop()


def uri(s3, path: str) -> str:
    return f"s3://{BUCKET}/{path}{s3[1]}"


def files(fs, path: str) -> set[str]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{path}", recursive=True,
                                               allow_not_found=True))
    return {i.path.removeprefix(f"{BUCKET}/{path}/") for i in infos if i.type == pafs.FileType.File}


def test_join_and_parent_keep_the_query():
    root = "s3://bucket/results/?endpoint_override=localhost:9000&scheme=http"
    exp = storage.join(root, "sweep")
    assert exp == "s3://bucket/results/sweep?endpoint_override=localhost:9000&scheme=http"
    assert storage.parent(exp) == "s3://bucket/results?endpoint_override=localhost:9000&scheme=http"
    assert storage.join("gs://bucket", "a") == "gs://bucket/a"
    assert storage.join("/srv/results", "a") == "/srv/results/a"


def test_mirror_paths_show_as_uris():
    exp = "s3://bucket/results/sweep?scheme=http"
    directory = storage.mirror(exp)
    assert directory.name == "sweep" and storage.mirror(exp) == directory
    assert storage.remote_of(directory) == exp and storage.remote_of(Path("/srv/sweep")) is None
    assert storage.where(directory / "trial_1" / "checkpoint_000001") == \
        "s3://bucket/results/sweep/trial_1/checkpoint_000001?scheme=http"
    assert storage.root_of(directory) == "s3://bucket/results?scheme=http"
    assert storage.where(Path("/srv/results/x")) == "/srv/results/x"
    assert storage.root_of(Path("/srv/results/x")) == "/srv/results"


def test_unusable_uris_are_user_errors():
    with pytest.raises(DistuneError, match="cannot use nosuch://bucket"):
        storage.filesystem("nosuch://bucket/x")
    with pytest.raises(DistuneError, match="cannot use s3://bucket/x"):
        storage.filesystem("s3://bucket/x?no_such_option=1")


def test_taken_name_overwrite_and_unwritable_bucket(s3):
    fs, _ = s3
    directory = storage.mirror(uri(s3, "prep/one"))
    storage.prepare_remote(directory, overwrite=False)
    (directory / "distune.yaml").write_text("x: 1\n")
    storage.publish(directory)
    assert files(fs, "prep/one") == {"distune.yaml"}
    with pytest.raises(DistuneError) as e:
        storage.prepare_remote(directory, overwrite=False)
    assert f"distune resume one --storage '{uri(s3, 'prep')}'" in str(e.value)
    storage.prepare_remote(directory, overwrite=True)
    assert files(fs, "prep/one") == set() and not any(directory.iterdir())
    with pytest.raises(DistuneError, match="no experiment at"):
        storage.fetch(uri(s3, "prep/none"))
    with pytest.raises(DistuneError, match="(?s)cannot use s3://no-such-bucket.*bucket exists"):
        storage.probe(f"s3://no-such-bucket/x{s3[1]}")


def test_fetch_downloads_all_but_checkpoints_and_publish_uploads_new_files(s3):
    fs, _ = s3
    for name in ("distune.yaml", "t1/result.json", "t1/checkpoint_000001/model.keras"):
        with fs.open_output_stream(f"{BUCKET}/sync/exp/{name}") as out:
            out.write(name.encode())
    directory = storage.fetch(uri(s3, "sync/exp"))
    assert (directory / "t1" / "result.json").read_text() == "t1/result.json"
    assert not (directory / "t1" / "checkpoint_000001").exists()  # fetched one by one, on use
    checkpoint = storage.local_copy(directory / "t1" / "checkpoint_000001")
    assert (checkpoint / "model.keras").read_text() == "t1/checkpoint_000001/model.keras"
    (directory / "results.csv").write_text("trial\n")
    storage.publish(directory)  # only what was written here: nothing of Ray's goes back
    assert files(fs, "sync/exp") == {"distune.yaml", "t1/result.json", "results.csv",
                                     "t1/checkpoint_000001/model.keras"}


def test_other_filesystems_get_whole_files_by_rename(tmp_path):
    directory = storage.mirror(f"file://{tmp_path}/store/exp")
    storage.prepare_remote(directory, overwrite=False)
    (directory / "report").mkdir()
    (directory / "report" / "history.png").write_bytes(b"png")
    storage.publish(directory)
    assert [p.name for p in (tmp_path / "store" / "exp").rglob("*")] == ["report", "history.png"]


@pytest.mark.slow
def test_sweep_on_s3_resumes_from_the_bucket_and_shows(ray_local, mnist_path, tmp_path, s3,
                                                       monkeypatch, capsys):
    from distune import cli
    from distune import pipeline, resume, run
    from distune.sweep import experiment_dir
    from distune.errors import Interrupted

    fs, _ = s3
    root = uri(s3, "results")
    exp = experiment(mnist_path, tmp_path, run={"storage": root, "name": "sweep", "report": True})
    monkeypatch.setattr(pipeline, "build_tuner", partial(pipeline.build_tuner,
                                                       callbacks=[interrupt_once(tmp_path / "sent")]))
    with pytest.raises(Interrupted, match=re.escape(f"distune resume sweep --storage {shlex.quote(root)}")):
        run(exp, "t")
    monkeypatch.undo()
    assert "distune.yaml" in files(fs, "results/sweep")  # written before the sweep started

    directory = experiment_dir(exp)
    shutil.rmtree(directory)  # nothing local is left: resume from the bucket, as on another node
    summary = resume(cli.experiment_path("sweep", root))
    stored = files(fs, "results/sweep")
    assert {"results.csv", "best.json", "best_model.keras", "report.html"} <= stored
    for trial in {f.split("/")[0] for f in stored if "/checkpoint_" in f}:
        assert {f"{trial}/progress.csv", f"{trial}/result.json"} <= stored
    assert len({f.split("/")[0] for f in stored if "/checkpoint_" in f}) == 2
    with fs.open_input_stream(f"{BUCKET}/results/sweep/results.csv") as f:
        table = f.read().decode()
    assert table.count("completed") == 2
    with fs.open_input_stream(f"{BUCKET}/results/sweep/best.json") as f:
        best = json.loads(f.read())
    assert best["checkpoint"].startswith(f"s3://{BUCKET}/results/sweep/{best['trial']}/checkpoint_")
    assert summary.trials == 2 and 0.0 < summary.test_accuracy <= 1.0

    capsys.readouterr()
    assert cli.main(["show", "sweep", "--storage", root]) == 0
    out = capsys.readouterr().out
    assert f"s3://{BUCKET}/results/sweep" in out and "2 trials" in out
    assert f"winner: {best['trial']}" in out
    with pytest.raises(DistuneError, match="already exists"):  # never overwritten
        run(exp, "t")

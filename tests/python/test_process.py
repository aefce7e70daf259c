"""Behaviour that needs a separate interpreter: git capture of the calling code, and the
background logger flushing at exit (normal exit, exception in the block, uncaught exception
outside any block)."""

from __future__ import annotations

import os
import textwrap

import pytest

from helpers import gql, git, last_json_line, run_python

RUN_QUERY = """query($id: ID!) { run(id: $id) {
  status tags codeCommit { repository commit branch dirty author message }
} }"""

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import custody

    custody.init()
    with custody.start_run(sys.argv[1], name="from-git") as run:
        run.log_metric("x", 1.0)
    print(json.dumps({"run": run.id}))
    """
)


def _metrics(server, run_id, key=None):
    # One page of up to 10,000 points (the server's largest) holds every test's history.
    q = "query($id: ID!, $k: String) { run(id: $id) { metrics(key: $k, first: 10000) { key value step } } }"
    return gql(server, q, {"id": run_id, "k": key})["run"]["metrics"]


def _repo(tmp, name="repo", remote=None):
    root = os.path.join(tmp, name)
    os.makedirs(root)
    git(root, "init", "-q", "-b", "main")
    with open(os.path.join(root, "train.py"), "w") as f:
        f.write(SCRIPT)
    with open(os.path.join(root, "README"), "w") as f:
        f.write(f"{name}\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first commit\n\nwith a body")
    if remote:
        git(root, "remote", "add", "origin", remote)
    return root


def test_start_run_captures_the_commit_of_the_calling_code(server, env, project, tmp):
    root = _repo(tmp, remote="https://ci-bot:s3cret-token@git.example.com/acme/fraud.git")
    head = git(root, "rev-parse", "HEAD")
    # Run from another directory: the commit is that of the calling script, not of the cwd.
    proc = run_python(os.path.join(root, "train.py"), env=env, cwd=tmp, args=[project])
    assert proc.returncode == 0, proc.stderr
    run = gql(server, RUN_QUERY, {"id": last_json_line(proc.stdout)["run"]})["run"]
    assert run["status"] == "FINISHED"
    commit = run["codeCommit"]
    assert commit is not None
    assert commit["commit"] == head and len(head) == 40
    # The remote URL, without its credentials.
    assert commit["repository"] == "https://git.example.com/acme/fraud.git"
    assert "s3cret" not in str(run)
    assert commit["branch"] == "main"
    assert commit["dirty"] is False
    assert commit["author"] == "Test Author <author@example.com>"
    assert commit["message"].startswith("first commit")
    assert run["tags"]["custody.git.dirty"] == "false"


def test_dirty_working_tree(server, env, project, tmp):
    root = _repo(tmp, "dirty-repo")
    with open(os.path.join(root, "README"), "a") as f:
        f.write("uncommitted change\n")
    proc = run_python(os.path.join(root, "train.py"), env=env, cwd=root, args=[project])
    assert proc.returncode == 0, proc.stderr
    run = gql(server, RUN_QUERY, {"id": last_json_line(proc.stdout)["run"]})["run"]
    commit = run["codeCommit"]
    assert commit["commit"] == git(root, "rev-parse", "HEAD")
    # No remote: the repository is the working tree's path.
    assert commit["repository"] == os.path.realpath(root)
    assert commit["dirty"] is True
    assert run["tags"]["custody.git.dirty"] == "true"


def test_dirty_flag_of_each_run_is_kept_in_its_tags(server, env, project, tmp):
    """The server keeps the first registration of a (repository, commit): a later dirty run of
    the same commit still gets its own dirty flag in the `custody.git.dirty` tag."""
    root = _repo(tmp, "twice")
    clean = run_python(os.path.join(root, "train.py"), env=env, cwd=root, args=[project])
    assert clean.returncode == 0, clean.stderr
    with open(os.path.join(root, "untracked.txt"), "w") as f:
        f.write("new file\n")
    dirty = run_python(os.path.join(root, "train.py"), env=env, cwd=root, args=[project])
    assert dirty.returncode == 0, dirty.stderr
    first = gql(server, RUN_QUERY, {"id": last_json_line(clean.stdout)["run"]})["run"]
    second = gql(server, RUN_QUERY, {"id": last_json_line(dirty.stdout)["run"]})["run"]
    assert first["codeCommit"]["commit"] == second["codeCommit"]["commit"]
    assert first["tags"]["custody.git.dirty"] == "false"
    assert second["tags"]["custody.git.dirty"] == "true"


def test_no_repository_means_no_commit(server, env, project, tmp):
    plain = os.path.join(tmp, "plain")
    os.makedirs(plain)
    script = os.path.join(plain, "train.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    proc = run_python(script, env=env, cwd=plain, args=[project])
    assert proc.returncode == 0, proc.stderr
    run = gql(server, RUN_QUERY, {"id": last_json_line(proc.stdout)["run"]})["run"]
    assert run["status"] == "FINISHED"
    assert run["codeCommit"] is None
    assert "custody.git.dirty" not in run["tags"]


def test_no_git_binary_means_no_commit(server, env, project, tmp):
    root = _repo(tmp, "nogit")
    env = dict(env, PATH=os.path.join(tmp, "empty-bin"))  # no `git` to be found
    proc = run_python(os.path.join(root, "train.py"), env=env, cwd=root, args=[project])
    assert proc.returncode == 0, proc.stderr
    run = gql(server, RUN_QUERY, {"id": last_json_line(proc.stdout)["run"]})["run"]
    assert run["status"] == "FINISHED"
    assert run["codeCommit"] is None


# ------------------------------------------------------------------------------------------ exit


LOGGER = textwrap.dedent(
    """
    import json, sys
    import custody

    mode, project = sys.argv[1], sys.argv[2]
    custody.init()

    def log_all(run):
        # A long interval: only the exit path can have sent these.
        for step in range(3000):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
            run.log_metric("acc", step / 3000.0, step=step)

    if mode == "with-ok":
        with custody.start_run(project, git=False, flush_interval=3600) as run:
            print(json.dumps({"run": run.id}), flush=True)
            log_all(run)
    elif mode == "with-raise":
        with custody.start_run(project, git=False, flush_interval=3600) as run:
            print(json.dumps({"run": run.id}), flush=True)
            log_all(run)
            raise ValueError("training diverged")
    elif mode == "no-with-exit":
        run = custody.start_run(project, git=False, flush_interval=3600)
        print(json.dumps({"run": run.id}), flush=True)
        log_all(run)
        # falls off the end: the atexit hook flushes and finishes
    elif mode == "no-with-raise":
        run = custody.start_run(project, git=False, flush_interval=3600)
        print(json.dumps({"run": run.id}), flush=True)
        log_all(run)
        raise RuntimeError("uncaught outside any block")
    elif mode == "sys-exit-1":
        run = custody.start_run(project, git=False, flush_interval=3600)
        print(json.dumps({"run": run.id}), flush=True)
        log_all(run)
        with run:
            sys.exit(3)
    """
)


@pytest.mark.parametrize(
    "mode, exit_ok, status, message",
    [
        ("with-ok", True, "FINISHED", None),
        ("with-raise", False, "FAILED", "ValueError: training diverged"),
        ("no-with-exit", True, "FINISHED", None),
        ("no-with-raise", False, "FAILED", "RuntimeError: uncaught outside any block"),
        ("sys-exit-1", False, "FAILED", None),
    ],
)
def test_background_logger_flushes_at_exit(server, env, project, tmp, mode, exit_ok, status, message):
    script = os.path.join(tmp, "logger.py")
    with open(script, "w") as f:
        f.write(LOGGER)
    proc = run_python(script, env=env, cwd=tmp, args=[mode, project])
    assert (proc.returncode == 0) == exit_ok, (proc.returncode, proc.stderr)
    if message:
        assert message in proc.stderr  # the exception propagates with its traceback
    run_id = last_json_line(proc.stdout)["run"]
    run = gql(server, RUN_QUERY, {"id": run_id})["run"]
    assert run["status"] == status
    loss = _metrics(server, run_id, "loss")
    acc = _metrics(server, run_id, "acc")
    assert len(loss) == 3000 and len(acc) == 3000
    assert [m["step"] for m in loss] == list(range(3000))
    assert loss[-1]["value"] == pytest.approx(1 / 3000)


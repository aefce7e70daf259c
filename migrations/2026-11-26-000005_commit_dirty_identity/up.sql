-- A checkout with uncommitted changes is not the commit: the dirty flag is part of a code
-- commit's identity, so a dirty run never inherits the clean registration of the same SHA (and
-- policies that refuse dirty code cannot be sidestepped by a clean run first).
ALTER TABLE code_commits DROP CONSTRAINT code_commits_repository_commit_sha_key;
ALTER TABLE code_commits ADD CONSTRAINT code_commits_identity UNIQUE (repository, commit_sha, dirty);

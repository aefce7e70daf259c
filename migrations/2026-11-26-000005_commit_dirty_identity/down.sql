ALTER TABLE code_commits DROP CONSTRAINT code_commits_identity;
ALTER TABLE code_commits ADD CONSTRAINT code_commits_repository_commit_sha_key UNIQUE (repository, commit_sha);

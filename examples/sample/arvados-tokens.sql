-- Sample rows for examples/migrate_dry_run.lua: users and API tokens in the
-- columns of Arvados' users and api_client_authorizations tables, for a
-- cluster zzzzz judged at 2027-01-15 08:00:00 UTC with MaxTokenLifetime 24h
-- (examples/sample/arvados-config.yml). The tokens are made up.
INSERT INTO users (id, uuid, owner_uuid, email, username, is_admin, created_at, updated_at) VALUES
  (1, 'zzzzz-tpzed-000000000000000', 'zzzzz-tpzed-000000000000000', 'root@example.org', 'root', true, '2026-01-01', '2026-01-01'),
  (2, 'zzzzz-tpzed-anonymouspublic', 'zzzzz-tpzed-000000000000000', NULL, 'anonymous', false, '2026-01-01', '2026-01-01'),
  (3, 'zzzzz-tpzed-a11ce0000000001', 'zzzzz-tpzed-000000000000000', 'alice@example.org', 'alice', false, '2026-01-01', '2026-01-01'),
  (4, 'zzzzz-tpzed-b0b000000000002', 'zzzzz-tpzed-000000000000000', 'bob@example.org', 'bob', false, '2026-01-01', '2026-01-01'),
  (5, 'zzzzz-tpzed-ca4010000000003', 'zzzzz-tpzed-000000000000000', 'carol@example.org', 'carol', true, '2026-01-01', '2026-01-01');

INSERT INTO api_client_authorizations (id, api_token, user_id, expires_at, created_at, updated_at, uuid) VALUES
  -- the system root's and the anonymous user's tokens: never touched
  (101, 'sampletoken101', 1, NULL, '2026-01-01', '2026-01-01', 'zzzzz-gj3su-000000000000101'),
  (102, 'sampletoken102', 2, NULL, '2026-01-01', '2026-01-01', 'zzzzz-gj3su-000000000000102'),
  -- alice: a token that never expires, and one that ends in 2 hours (fine)
  (103, 'sampletoken103', 3, NULL, '2026-06-01', '2026-06-01', 'zzzzz-gj3su-000000000000103'),
  (104, 'sampletoken104', 3, '2027-01-15 10:00:00', '2027-01-15 08:00:00', '2027-01-15 08:00:00', 'zzzzz-gj3su-000000000000104'),
  -- bob: a token for six weeks, and one that expired yesterday
  (105, 'sampletoken105', 4, '2027-03-01 00:00:00', '2027-01-10 00:00:00', '2027-01-10 00:00:00', 'zzzzz-gj3su-000000000000105'),
  (106, 'sampletoken106', 4, '2027-01-14 08:00:00', '2027-01-13 08:00:00', '2027-01-13 08:00:00', 'zzzzz-gj3su-000000000000106'),
  -- carol (an admin): two tokens that never expire
  (107, 'sampletoken107', 5, NULL, '2026-03-01', '2026-03-01', 'zzzzz-gj3su-000000000000107'),
  (108, 'sampletoken108', 5, NULL, '2026-04-01', '2026-04-01', 'zzzzz-gj3su-000000000000108'),
  -- a token whose user row is gone
  (109, 'sampletoken109', 99, NULL, '2026-02-01', '2026-02-01', 'zzzzz-gj3su-000000000000109');

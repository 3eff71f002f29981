use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

fn audit(action: &str, target: &str) -> AuditEntry {
    AuditEntry::new("admin", action, target, "ok")
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn sub(id: &str) -> SubscriptionRecord {
    SubscriptionRecord {
        id: id.to_owned(),
        display_name: format!("Subscription {id}"),
        scope: "all".to_owned(),
        owner: Some("ops@example.com".to_owned()),
        state: SubscriptionState::Active,
        created_at: String::new(),
        updated_at: String::new(),
        primary_digest: digest(&format!("{id}/primary/1")),
        secondary_digest: digest(&format!("{id}/secondary/1")),
    }
}

fn target(id: &str) -> String {
    format!("subscription:{id}")
}

fn is_rfc3339_seconds(s: &str) -> bool {
    s.len() == 20
        && s.ends_with('Z')
        && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

fn count(store: &SqliteStore, sql: &str) -> i64 {
    store
        .lock()
        .query_row(sql, [], |row| row.get(0))
        .expect(sql)
}

#[test]
fn open_creates_the_dir_sets_pragmas_and_migrates_idempotently() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("data");
    let store = SqliteStore::open(&dir).unwrap();
    assert_eq!(store.path(), dir.join(DB_FILE_NAME));
    {
        let conn = store.lock();
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the db file is private: {mode:o}");
    }
    let secret = store.installation_secret();
    assert_eq!(secret.len(), 32);
    assert_ne!(secret, [0u8; 32]);
    let debug = format!("{store:?}");
    assert!(debug.contains("SqliteStore"));
    assert!(
        !debug.contains(&format!("{secret:?}")),
        "Debug never shows the secret"
    );
    drop(store);

    for _ in 0..3 {
        let store = SqliteStore::open(&dir).unwrap();
        assert_eq!(
            store.installation_secret(),
            secret,
            "secret stable across reopen"
        );
        let version: u32 = store
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM installation"), 1);
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'audit_log'"
            ),
            1
        );
    }

    // Another installation gets another secret.
    let other = SqliteStore::open(&tmp.path().join("other")).unwrap();
    assert_ne!(other.installation_secret(), secret);
}

#[test]
fn a_newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(tmp.path()).unwrap());
    {
        let conn = Connection::open(tmp.path().join(DB_FILE_NAME)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match SqliteStore::open(tmp.path()) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[test]
fn revisions_are_numbered_hashed_and_listed_newest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    assert!(store.latest_revision().unwrap().is_none());
    assert!(store.list_revisions(None, 10).unwrap().is_empty());
    assert!(matches!(store.revision(1), Err(StoreError::NotFound)));

    let first = store
        .add_revision(
            "abc",
            RevisionSource::File,
            "file",
            audit("config.load", "config"),
        )
        .unwrap();
    assert_eq!(first.revision, 1);
    assert_eq!(
        first.sha256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(first.source, RevisionSource::File);
    assert_eq!(first.author, "file");
    assert!(
        is_rfc3339_seconds(&first.created_at),
        "{}",
        first.created_at
    );

    for n in 2..=5u64 {
        let source = if n == 5 {
            RevisionSource::Rollback
        } else {
            RevisionSource::Api
        };
        let meta = store
            .add_revision(
                &format!("text {n}\n"),
                source,
                "admin",
                audit("config.put", "config"),
            )
            .unwrap();
        assert_eq!(meta.revision, n);
        assert_eq!(meta.sha256, sha256_hex(format!("text {n}\n").as_bytes()));
    }

    let latest = store.latest_revision().unwrap().unwrap();
    assert_eq!(latest.meta.revision, 5);
    assert_eq!(latest.meta.source, RevisionSource::Rollback);
    assert_eq!(latest.text, "text 5\n");
    let third = store.revision(3).unwrap();
    assert_eq!(third.text, "text 3\n");
    assert_eq!(third.meta.author, "admin");
    assert_eq!(store.revision(1).unwrap().meta, first);
    assert!(matches!(store.revision(6), Err(StoreError::NotFound)));
    assert!(matches!(
        store.revision(u64::MAX),
        Err(StoreError::NotFound)
    ));

    let numbers = |v: Vec<RevisionMeta>| v.into_iter().map(|m| m.revision).collect::<Vec<_>>();
    assert_eq!(numbers(store.list_revisions(None, 2).unwrap()), [5, 4]);
    assert_eq!(numbers(store.list_revisions(Some(4), 2).unwrap()), [3, 2]);
    assert_eq!(numbers(store.list_revisions(Some(2), 10).unwrap()), [1]);
    assert!(store.list_revisions(Some(1), 10).unwrap().is_empty());
    assert!(store.list_revisions(None, 0).unwrap().is_empty());
    assert_eq!(
        numbers(store.list_revisions(Some(u64::MAX), 100).unwrap()),
        [5, 4, 3, 2, 1]
    );

    // One audit entry per revision, carrying its number.
    let log = store.list_audit(None, 100).unwrap();
    assert_eq!(log.len(), 5);
    for (entry, n) in log.iter().zip((1..=5u64).rev()) {
        assert_eq!(entry.revision, Some(n));
        assert!(is_rfc3339_seconds(&entry.at));
        assert_eq!(entry.result, "ok");
    }
    assert_eq!(log[4].action, "config.load");
    assert_eq!(log[0].action, "config.put");
}

#[test]
fn subscriptions_crud_with_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    let audit_len = |store: &SqliteStore| store.list_audit(None, 1000).unwrap().len();

    for id in ["b", "a", "c"] {
        store
            .create_subscription(&sub(id), audit("subscription.create", &target(id)))
            .unwrap();
    }
    assert_eq!(audit_len(&store), 3);

    let a = store.subscription("a").unwrap();
    let mut expected = sub("a");
    expected.created_at.clone_from(&a.created_at);
    expected.updated_at.clone_from(&a.updated_at);
    assert_eq!(a, expected);
    assert!(is_rfc3339_seconds(&a.created_at));
    assert!(is_rfc3339_seconds(&a.updated_at));

    // Given times are kept.
    let mut d = sub("d");
    d.created_at = "2020-01-02T03:04:05Z".to_owned();
    d.updated_at = "2020-01-02T03:04:06Z".to_owned();
    d.owner = None;
    store
        .create_subscription(&d, audit("subscription.create", &target("d")))
        .unwrap();
    assert_eq!(store.subscription("d").unwrap(), d);

    // Duplicate id: Conflict, and neither data nor audit changes.
    let mut dup = sub("a");
    dup.display_name = "other".to_owned();
    dup.primary_digest = digest("fresh-1");
    dup.secondary_digest = digest("fresh-2");
    assert!(matches!(
        store.create_subscription(&dup, audit("subscription.create", &target("a"))),
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.subscription("a").unwrap(), a);
    assert_eq!(audit_len(&store), 4);

    // A digest already in use: Conflict too.
    let mut same_key = sub("e");
    same_key.primary_digest = a.primary_digest;
    assert!(matches!(
        store.create_subscription(&same_key, audit("subscription.create", &target("e"))),
        Err(StoreError::Conflict)
    ));
    assert!(matches!(store.subscription("e"), Err(StoreError::NotFound)));
    assert_eq!(audit_len(&store), 4);

    // Listing with a cursor.
    let ids = |v: Vec<SubscriptionRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_subscriptions(None, 2).unwrap()), ["a", "b"]);
    assert_eq!(
        ids(store.list_subscriptions(Some("b"), 2).unwrap()),
        ["c", "d"]
    );
    assert!(store.list_subscriptions(Some("d"), 2).unwrap().is_empty());
    assert!(store.list_subscriptions(None, 0).unwrap().is_empty());
    assert_eq!(
        ids(store.all_subscriptions().unwrap()),
        ["a", "b", "c", "d"]
    );

    // State change.
    let suspended = store
        .set_subscription_state(
            "b",
            SubscriptionState::Suspended,
            audit("subscription.suspend", &target("b")),
        )
        .unwrap();
    assert_eq!(suspended.state, SubscriptionState::Suspended);
    assert!(is_rfc3339_seconds(&suspended.updated_at));
    assert_eq!(store.subscription("b").unwrap(), suspended);
    let updated = store
        .set_subscription_state(
            "d",
            SubscriptionState::Cancelled,
            audit("subscription.cancel", &target("d")),
        )
        .unwrap();
    assert_ne!(updated.updated_at, d.updated_at, "updated_at moves");
    assert_eq!(updated.created_at, d.created_at);

    // Key replacement, one slot at a time.
    let new_primary = digest("a/primary/2");
    let rotated = store
        .set_subscription_key(
            "a",
            KeySlot::Primary,
            new_primary,
            audit("subscription.regenerate-primary-key", &target("a")),
        )
        .unwrap();
    assert_eq!(rotated.primary_digest, new_primary);
    assert_eq!(rotated.secondary_digest, a.secondary_digest);
    let new_secondary = digest("a/secondary/2");
    let rotated = store
        .set_subscription_key(
            "a",
            KeySlot::Secondary,
            new_secondary,
            audit("subscription.regenerate-secondary-key", &target("a")),
        )
        .unwrap();
    assert_eq!(rotated.primary_digest, new_primary);
    assert_eq!(rotated.secondary_digest, new_secondary);
    assert_eq!(store.subscription("a").unwrap(), rotated);
    // Taking another subscription's digest: Conflict, nothing changes.
    assert!(matches!(
        store.set_subscription_key(
            "c",
            KeySlot::Primary,
            new_primary,
            audit("subscription.regenerate-primary-key", &target("c")),
        ),
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.subscription("c").unwrap().primary_digest,
        sub("c").primary_digest
    );
    let before_missing = audit_len(&store);
    assert_eq!(before_missing, 8);

    // Absent ids: NotFound, no audit entry.
    assert!(matches!(
        store.subscription("zz"),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_subscription_state("zz", SubscriptionState::Active, audit("x", "y")),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_subscription_key("zz", KeySlot::Secondary, digest("q"), audit("x", "y")),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_subscription("zz", audit("x", "y")),
        Err(StoreError::NotFound)
    ));
    assert_eq!(audit_len(&store), before_missing);

    // Delete.
    store
        .delete_subscription("c", audit("subscription.delete", &target("c")))
        .unwrap();
    assert!(matches!(store.subscription("c"), Err(StoreError::NotFound)));
    assert!(matches!(
        store.delete_subscription("c", audit("subscription.delete", &target("c"))),
        Err(StoreError::NotFound)
    ));
    assert_eq!(ids(store.all_subscriptions().unwrap()), ["a", "b", "d"]);

    let actions: Vec<String> = store
        .list_audit(None, 100)
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| format!("{} {}", e.action, e.target))
        .collect();
    assert_eq!(
        actions,
        [
            "subscription.create subscription:b",
            "subscription.create subscription:a",
            "subscription.create subscription:c",
            "subscription.create subscription:d",
            "subscription.suspend subscription:b",
            "subscription.cancel subscription:d",
            "subscription.regenerate-primary-key subscription:a",
            "subscription.regenerate-secondary-key subscription:a",
            "subscription.delete subscription:c",
        ]
    );
}

#[test]
fn the_audit_log_is_append_only_and_listed_newest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    for i in 0..5 {
        let mut entry = AuditEntry::new("operator", "config.put", "config", "invalid");
        entry.revision = if i == 2 { Some(7) } else { None };
        entry.id = 999; // ignored: the store assigns it
        store.append_audit(entry).unwrap();
    }
    let all = store.list_audit(None, 10).unwrap();
    let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, [5, 4, 3, 2, 1]);
    assert_eq!(all[2].revision, Some(7));
    assert_eq!(all[0].actor, "operator");
    assert_eq!(all[0].result, "invalid");
    let page: Vec<u64> = store
        .list_audit(Some(4), 2)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(page, [3, 2]);
    assert!(store.list_audit(Some(1), 10).unwrap().is_empty());
    assert!(store.list_audit(None, 0).unwrap().is_empty());

    let conn = store.lock();
    let update = conn.execute("UPDATE audit_log SET result = 'tampered'", []);
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = conn.execute("DELETE FROM audit_log", []);
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    drop(conn);
    assert_eq!(store.list_audit(None, 10).unwrap(), all);
}

#[test]
fn everything_survives_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, revisions, subs, log) = {
        let store = SqliteStore::open(tmp.path()).unwrap();
        for n in 0..3 {
            store
                .add_revision(
                    &format!("rev {n}"),
                    RevisionSource::Api,
                    "admin",
                    audit("config.put", "config"),
                )
                .unwrap();
        }
        for id in ["x", "y", "z"] {
            store
                .create_subscription(&sub(id), audit("subscription.create", &target(id)))
                .unwrap();
        }
        store
            .set_subscription_state(
                "x",
                SubscriptionState::Suspended,
                audit("subscription.suspend", &target("x")),
            )
            .unwrap();
        store
            .set_subscription_key(
                "y",
                KeySlot::Primary,
                digest("y2"),
                audit("subscription.regenerate-primary-key", &target("y")),
            )
            .unwrap();
        store
            .delete_subscription("z", audit("subscription.delete", &target("z")))
            .unwrap();
        store
            .append_audit(AuditEntry::new(
                "operator",
                "config.put",
                "config",
                "forbidden",
            ))
            .unwrap();
        let revisions: Vec<Revision> = (1..=3).map(|n| store.revision(n).unwrap()).collect();
        (
            store.installation_secret(),
            revisions,
            store.all_subscriptions().unwrap(),
            store.list_audit(None, 100).unwrap(),
        )
    };
    assert_eq!(log.len(), 10);

    let store = SqliteStore::open(tmp.path()).unwrap();
    assert_eq!(store.installation_secret(), secret);
    let reread: Vec<Revision> = (1..=3).map(|n| store.revision(n).unwrap()).collect();
    assert_eq!(reread, revisions);
    assert_eq!(store.latest_revision().unwrap().as_ref(), revisions.last());
    assert_eq!(store.all_subscriptions().unwrap(), subs);
    assert_eq!(
        store.subscription("x").unwrap().state,
        SubscriptionState::Suspended
    );
    assert_eq!(
        store.subscription("y").unwrap().primary_digest,
        digest("y2")
    );
    assert!(matches!(store.subscription("z"), Err(StoreError::NotFound)));
    assert_eq!(store.list_audit(None, 100).unwrap(), log);

    // Numbering goes on where it stopped.
    let next = store
        .add_revision(
            "rev 3",
            RevisionSource::Api,
            "admin",
            audit("config.put", "config"),
        )
        .unwrap();
    assert_eq!(next.revision, 4);
    assert_eq!(store.list_audit(None, 1).unwrap()[0].id, 11);
}

// ---------------------------------------------------------------------------------------
// Crash consistency: a child process writes as fast as it can and is SIGKILLed mid-stream.

const WRITER_DIR_ENV: &str = "TOLLGATE_STORE_TEST_WRITER_DIR";
const WRITER_ROUND_ENV: &str = "TOLLGATE_STORE_TEST_WRITER_ROUND";
const WRITER_READY: &str = "TOLLGATE_STORE_WRITER_READY";

/// Not a test on its own: with `TOLLGATE_STORE_TEST_WRITER_DIR` set (by
/// `sigkill_mid_write_leaves_a_consistent_store`), writes to that store in a loop until it is
/// killed (at most 30 s or 200 000 iterations). Without the variable it does nothing.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(WRITER_DIR_ENV) else {
        return;
    };
    let round = std::env::var(WRITER_ROUND_ENV).unwrap_or_default();
    let store = SqliteStore::open(Path::new(&dir)).unwrap();
    let start = Instant::now();
    for i in 0..200_000u32 {
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
        store
            .add_revision(
                &format!(
                    "round {round} write {i}\n{}",
                    "x".repeat((i % 64) as usize * 100)
                ),
                RevisionSource::Api,
                "admin",
                audit("config.put", "config"),
            )
            .unwrap();
        let id = format!("r{round}-{i:06}");
        store
            .create_subscription(&sub(&id), audit("subscription.create", &target(&id)))
            .unwrap();
        if i % 3 == 0 {
            store
                .set_subscription_state(
                    &id,
                    SubscriptionState::Suspended,
                    audit("subscription.suspend", &target(&id)),
                )
                .unwrap();
        }
        if i % 5 == 0 {
            store
                .set_subscription_key(
                    &id,
                    KeySlot::Primary,
                    digest(&format!("{id}/primary/2")),
                    audit("subscription.regenerate-primary-key", &target(&id)),
                )
                .unwrap();
        }
        if i % 7 == 0 {
            store
                .delete_subscription(&id, audit("subscription.delete", &target(&id)))
                .unwrap();
        }
        if i == 0 {
            let mut out = std::io::stdout().lock();
            // On its own line: the harness may have printed `test NAME ... ` without one.
            writeln!(out, "\n{WRITER_READY}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// Kills the child (SIGKILL on Unix) if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Open the store after a crash and check every invariant; returns (revisions, created
/// subscriptions).
fn check_consistent(dir: &Path) -> (i64, i64) {
    let store = SqliteStore::open(dir).unwrap();
    let integrity: String = store
        .lock()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");

    // Revisions 1..=N, contiguous, each with exactly one audit entry, and nothing audited
    // for a revision that is not there.
    let revisions = count(&store, "SELECT COUNT(*) FROM revisions");
    assert_eq!(
        count(&store, "SELECT COALESCE(MAX(revision), 0) FROM revisions"),
        revisions
    );
    if revisions > 0 {
        assert_eq!(count(&store, "SELECT MIN(revision) FROM revisions"), 1);
    }
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM revisions r WHERE (SELECT COUNT(*) FROM audit_log a
             WHERE a.revision = r.revision AND a.action = 'config.put') != 1"
        ),
        0,
        "a revision without its audit entry"
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM audit_log a WHERE a.revision IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM revisions r WHERE r.revision = a.revision)"
        ),
        0,
        "an audit entry for a missing revision"
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'config.put'"
        ),
        revisions
    );
    for meta in store.list_revisions(None, usize::MAX).unwrap() {
        let rev = store.revision(meta.revision).unwrap();
        assert_eq!(rev.meta.sha256, sha256_hex(rev.text.as_bytes()));
    }

    // Every subscription was audited as created; every audited creation is there unless
    // audited as deleted; nothing audited as deleted is there.
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM subscriptions s WHERE NOT EXISTS (SELECT 1 FROM audit_log a
             WHERE a.action = 'subscription.create' AND a.target = 'subscription:' || s.id)"
        ),
        0,
        "a subscription without its subscription.create entry"
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM audit_log c WHERE c.action = 'subscription.create'
             AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE 'subscription:' || s.id = c.target)
             AND NOT EXISTS (SELECT 1 FROM audit_log d
                             WHERE d.action = 'subscription.delete' AND d.target = c.target)"
        ),
        0,
        "an audited creation that vanished"
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM audit_log d JOIN subscriptions s
             ON d.target = 'subscription:' || s.id WHERE d.action = 'subscription.delete'"
        ),
        0,
        "an audited deletion that did not happen"
    );

    // State and key changes match their audit entries exactly.
    let audited = |action: &str, id: &str| -> bool {
        store
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM audit_log WHERE action = ?1 AND target = ?2",
                params![action, target(id)],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    };
    for s in store.all_subscriptions().unwrap() {
        let suspended = s.state == SubscriptionState::Suspended;
        assert_eq!(
            suspended,
            audited("subscription.suspend", &s.id),
            "{}",
            s.id
        );
        if !suspended {
            assert_eq!(s.state, SubscriptionState::Active);
        }
        let rotated = s.primary_digest == digest(&format!("{}/primary/2", s.id));
        if !rotated {
            assert_eq!(s.primary_digest, digest(&format!("{}/primary/1", s.id)));
        }
        assert_eq!(
            rotated,
            audited("subscription.regenerate-primary-key", &s.id),
            "{}",
            s.id
        );
        assert_eq!(s.secondary_digest, digest(&format!("{}/secondary/1", s.id)));
    }

    // The store still takes writes after the crash.
    let meta = store
        .add_revision(
            "after the crash",
            RevisionSource::Api,
            "admin",
            audit("config.put", "config"),
        )
        .unwrap();
    assert_eq!(meta.revision, u64::try_from(revisions).unwrap() + 1);

    let created = count(
        &store,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'subscription.create'",
    );
    (revisions + 1, created)
}

#[test]
fn sigkill_mid_write_leaves_a_consistent_store() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    let test_name = format!("{module}::crash_writer_child");

    let mut last_revisions = 0;
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args([
                test_name.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_DIR_ENV, tmp.path())
            .env(WRITER_ROUND_ENV, round.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut child = KillOnDrop(child);

        // Read the child's stdout (until EOF, so it never blocks on a full pipe) and say
        // when it has started writing.
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(WRITER_READY) {
                    let _ = ready_tx.send(());
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the writer child did not start writing");
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the writer child stopped before it was killed"
        );
        child.0.kill().unwrap(); // SIGKILL
        let status = child.0.wait().unwrap();
        assert!(!status.success());
        drop(child);
        reader.join().unwrap();

        let (revisions, created) = check_consistent(tmp.path());
        println!("round {round}: {revisions} revisions, {created} subscriptions created");
        assert!(
            revisions > last_revisions + 1,
            "round {round}: the child wrote nothing ({revisions} revisions)"
        );
        assert!(created > 0);
        last_revisions = revisions;
    }
}

fn quota(origin: &str, key: &str, sub: Option<&str>, end: i64, calls: u64) -> QuotaCounterRecord {
    QuotaCounterRecord {
        origin: origin.to_owned(),
        counter_key: key.to_owned(),
        subscription_id: sub.map(str::to_owned),
        period_start_ms: end - 60_000,
        period_end_ms: end,
        calls,
        bytes: calls * 10,
    }
}

#[test]
fn quota_counters_are_upserted_expired_and_reset_with_an_audit_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    let a = quota("product:p/inbound/0", "s1", Some("s1"), 100_000, 3);
    let b = quota("api:x/inbound/1", "10.0.0.1", Some("s1"), 100_000, 1);
    let c = quota("product:p/inbound/0", "s2", Some("s2"), 100_000, 5);
    let old = quota("product:p/inbound/0", "s3", Some("s3"), 50_000, 9);
    store
        .save_quota_counters(&[a.clone(), b.clone(), c.clone(), old], 40_000)
        .unwrap();
    assert_eq!(store.quota_counters(40_000).unwrap().len(), 4);
    // Only live periods are loaded.
    assert_eq!(store.quota_counters(60_000).unwrap().len(), 3);
    // An update replaces; a save deletes what has expired.
    let a2 = quota("product:p/inbound/0", "s1", Some("s1"), 100_000, 4);
    store
        .save_quota_counters(std::slice::from_ref(&a2), 60_000)
        .unwrap();
    assert_eq!(count(&store, "SELECT COUNT(*) FROM quota_counters"), 3);
    let all = store.quota_counters(60_000).unwrap();
    assert!(all.contains(&a2) && all.contains(&b) && all.contains(&c));
    // Huge counts saturate instead of failing.
    let big = quota("q", "k", None, 100_000, u64::MAX / 10);
    store.save_quota_counters(&[big], 60_000).unwrap();
    // Reset: the subscription's counters go, with an audit entry, in one transaction.
    let n = store
        .reset_quota_counters("s1", audit("subscription.usage-reset", &target("s1")))
        .unwrap();
    assert_eq!(n, 2);
    let left = store.quota_counters(60_000).unwrap();
    assert_eq!(left.len(), 2);
    assert!(left
        .iter()
        .all(|r| r.subscription_id.as_deref() != Some("s1")));
    let log = store.list_audit(None, 1).unwrap();
    assert_eq!(log[0].action, "subscription.usage-reset");
    assert_eq!(log[0].target, "subscription:s1");
}

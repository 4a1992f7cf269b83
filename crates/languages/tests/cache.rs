//! The compile cache: atomic inserts, per-key locks, per-owner budgets and LRU eviction, pinned
//! entries, permissions.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use codebeaker_languages::{CacheOwner, CompileCache, LanguageError, Mode};

fn key(n: u8) -> String {
    format!("{:064x}", n)
}

fn alice() -> CacheOwner {
    CacheOwner::Caller("alice".into())
}

fn mallory() -> CacheOwner {
    CacheOwner::Caller("mallory".into())
}

/// Makes `owner`'s use of `key` look `age` old, so that LRU order is unambiguous.
fn age_mark(cache: &CompileCache, owner_dir_contains: &str, key: &str, age: Duration) {
    let owners = cache.root().join("owners");
    for dir in std::fs::read_dir(&owners).expect("owners").flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if name.contains(owner_dir_contains) {
            let mark = dir.path().join(key);
            if mark.exists() {
                std::fs::File::options()
                    .write(true)
                    .open(&mark)
                    .expect("open mark")
                    .set_modified(SystemTime::now() - age)
                    .expect("set mtime");
            }
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn lookup_after_insert_with_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CompileCache::open(dir.path().join("cache"), 1 << 20).expect("open");
    assert_eq!(cache.lookup(&key(1)), None);
    let files = [
        ("main", b"binary".to_vec(), true),
        ("lib/data.txt", b"data".to_vec(), false),
    ];
    let entry = cache.insert(&key(1), &alice(), &files).expect("insert");
    assert_eq!(cache.lookup(&key(1)), Some(entry.clone()));
    assert_eq!(std::fs::read(entry.join("main")).expect("read"), b"binary");
    assert_eq!(
        std::fs::read(entry.join("lib/data.txt")).expect("read"),
        b"data"
    );
    assert_eq!(mode(cache.root()), 0o711);
    assert_eq!(mode(&entry), 0o755);
    assert_eq!(mode(&entry.join("lib")), 0o755);
    assert_eq!(mode(&entry.join("main")), 0o755);
    assert_eq!(mode(&entry.join("lib/data.txt")), 0o644);
    assert_eq!(mode(&cache.root().join("locks")), 0o700);
    assert_eq!(cache.size().expect("size"), 10);
}

#[test]
fn rejects_bad_keys_and_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CompileCache::open(dir.path(), 1 << 20).expect("open");
    for bad in ["", "../etc", &"A".repeat(64), &"0".repeat(63)] {
        assert!(matches!(
            cache.insert(bad, &alice(), &[("x", b"1", false)]),
            Err(LanguageError::InvalidCacheKey(_))
        ));
        assert_eq!(cache.lookup(bad), None);
    }
    for bad in ["../x", "/abs", "a/../b", ""] {
        assert!(matches!(
            cache.insert(&key(2), &alice(), &[(bad, b"1", false)]),
            Err(LanguageError::InvalidFileName(_))
        ));
    }
}

#[test]
fn concurrent_inserts_of_one_key_keep_one_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(CompileCache::open(dir.path(), 1 << 20).expect("open"));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let cache = Arc::clone(&cache);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let contents = format!("same program (writer {i})");
                cache
                    .insert(&key(7), &alice(), &[("main", contents.as_bytes(), true)])
                    .expect("insert")
            })
        })
        .collect();
    let paths: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert!(paths.iter().all(|p| p == &paths[0]));
    let stored = std::fs::read_to_string(paths[0].join("main")).expect("read");
    assert!(stored.starts_with("same program (writer "), "{stored}");
    let entries: Vec<_> = std::fs::read_dir(cache.root())
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "locks" && n != "tmp" && n != "owners")
        .collect();
    assert_eq!(entries, [key(7)]);
    assert_eq!(
        std::fs::read_dir(cache.root().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
}

#[test]
fn concurrent_requests_compile_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(CompileCache::open(dir.path(), 1 << 20).expect("open"));
    let compiles = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (cache, compiles, barrier) = (
                Arc::clone(&cache),
                Arc::clone(&compiles),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                barrier.wait();
                cache
                    .get_or_insert_with::<LanguageError, _>(&key(9), &alice(), || {
                        compiles.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        Ok(vec![("main".to_string(), b"compiled".to_vec(), true)])
                    })
                    .expect("get_or_insert_with")
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
    assert_eq!(compiles.load(Ordering::SeqCst), 1);
}

#[test]
fn eviction_removes_the_owners_least_recently_used_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CompileCache::open(dir.path(), 2500).expect("open");
    let kilobyte = vec![b'x'; 1000];
    for n in [1, 2] {
        cache
            .insert(&key(n), &alice(), &[("a", &kilobyte, false)])
            .expect("insert");
    }
    // The second entry is the least recently used; then the first is used again.
    age_mark(&cache, "caller-", &key(1), Duration::from_secs(60));
    age_mark(&cache, "caller-", &key(2), Duration::from_secs(120));
    assert!(cache.claim(&key(1), &alice()).expect("claim").is_some());
    cache
        .insert(&key(3), &alice(), &[("a", &kilobyte, false)])
        .expect("insert 3");
    assert!(cache.lookup(&key(1)).is_some(), "recently used entry kept");
    assert!(
        cache.lookup(&key(2)).is_none(),
        "least recently used entry evicted"
    );
    assert!(cache.lookup(&key(3)).is_some(), "new entry kept");
    assert!(cache.owner_bytes(&alice()).expect("bytes") <= 2500);
}

#[test]
fn one_owner_never_evicts_another_owners_or_pinned_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CompileCache::open(dir.path(), 2500).expect("open");
    let kilobyte = vec![b'x'; 1000];
    cache
        .insert(&key(1), &alice(), &[("a", &kilobyte, false)])
        .expect("alice's entry");
    cache
        .insert(&key(2), &CacheOwner::Pinned, &[("a", &kilobyte, false)])
        .expect("pinned entry");
    // Mallory uses alice's entry too, then stores far more than her budget.
    assert!(cache.claim(&key(1), &mallory()).expect("claim").is_some());
    for n in 10..30 {
        cache
            .insert(&key(n), &mallory(), &[("a", &kilobyte, false)])
            .expect("mallory's entry");
    }
    assert!(cache.lookup(&key(1)).is_some(), "alice's entry survives");
    assert!(cache.lookup(&key(2)).is_some(), "the pinned entry survives");
    assert!(cache.owner_bytes(&mallory()).expect("bytes") <= 2500);
    assert_eq!(cache.owner_bytes(&alice()).expect("bytes"), 1000);
    // Mallory's own use of alice's entry was given up, alice's stays.
    assert!(cache.evict().is_ok());
    assert!(cache.lookup(&key(1)).is_some());
    // Pinned entries have no budget.
    for n in 40..50 {
        cache
            .insert(&key(n), &CacheOwner::Pinned, &[("a", &kilobyte, false)])
            .expect("pinned");
    }
    assert_eq!(cache.evict().expect("evict"), 0);
    assert!((40..50).all(|n| cache.lookup(&key(n)).is_some()));
}

#[test]
fn entries_no_owner_keeps_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("cache");
    {
        let cache = CompileCache::open(&root, 1 << 20).expect("open");
        cache
            .insert(&key(1), &alice(), &[("main", b"kept", true)])
            .expect("insert");
    }
    // An entry of an older cache (or of a crashed writer): no owner marks it.
    std::fs::create_dir(root.join(key(2))).expect("mkdir");
    std::fs::write(root.join(key(2)).join("main"), b"from before").expect("write");
    let cache = CompileCache::open(&root, 1 << 20).expect("reopen");
    assert!(cache.lookup(&key(1)).is_some());
    assert!(
        cache.lookup(&key(2)).is_none(),
        "an unowned entry is removed"
    );
    assert_eq!(mode(&root.join("owners")), 0o700);
}

#[test]
fn eviction_skips_locked_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CompileCache::open(dir.path(), 1500).expect("open");
    let kilobyte = vec![b'x'; 1000];
    cache
        .insert(&key(1), &alice(), &[("a", &kilobyte, false)])
        .expect("insert 1");
    age_mark(&cache, "caller-", &key(1), Duration::from_secs(60));
    let lock = cache.lock(&key(1)).expect("lock");
    assert!(cache.try_lock(&key(1)).expect("try_lock").is_none());
    // A claim does not wait for a held lock.
    assert!(cache.claim(&key(1), &mallory()).expect("claim").is_none());
    cache
        .insert(&key(2), &alice(), &[("a", &kilobyte, false)])
        .expect("insert 2");
    assert!(cache.lookup(&key(1)).is_some(), "locked entry survives");
    drop(lock);
    assert_eq!(cache.evict().expect("evict"), 1);
    assert!(cache.lookup(&key(1)).is_none());
    assert!(cache.lookup(&key(2)).is_some());
}

#[test]
fn a_compiled_snippet_runs_from_its_cache_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CompileCache::open(dir.path().join("cache"), 64 << 20).expect("open");
    let plan = common::plan(
        "go",
        "value := input_data[\"value\"].(float64)\nresult := map[string]interface{}{\"output\": value * 2}",
        Mode::Snippet,
    );
    let outcome = common::execute(&plan, "", r#"{"value":21}"#);
    assert_eq!(outcome.json(), serde_json::json!({"output": 42}));
    let key = plan.cache_key().expect("compiled");
    let entry = cache
        .insert_dir(key, &alice(), &outcome.out_dir)
        .expect("insert_dir");
    assert_eq!(mode(&entry.join("main")), 0o755);

    // Run straight from the cache entry, for another input: no compile step.
    let (finished, result) =
        common::run_from(&plan, Path::new("/nonexistent"), &entry, r#"{"value":50}"#);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(result.as_deref(), Some(&br#"{"output":100}"#[..]));
}

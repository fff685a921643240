//! Evacuating a side: one record written by `switchyard flags evacuate`, learned by every router
//! in one poll, under load on three routers over DynamoDB Local; `flags restore` gives back
//! exactly what was there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flag_store::store::Store;
use flag_store::{FlagWrite, Placing};
use http::StatusCode;
use switchyard::Router;

use crate::support::*;

const SPLITS: usize = 12;
const PINNED: usize = 4;
const USERS: usize = 40;

/// One answer: the router's snapshot version before it was sent, the tenant, the user, and the
/// status and the side that answered (its body names it).
type Answer = (u64, String, usize, StatusCode, String);

/// Sends requests round the three routers until `stop`, for every tenant and user in turn.
fn load(
    routers: Vec<(std::net::SocketAddr, Arc<flag_store::FlagState>)>,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = client();
        let tenants = tenants();
        let mut n = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let (addr, flags) = &routers[n % routers.len()];
            let tenant = &tenants[n % tenants.len()];
            let user = (n / tenants.len()) % USERS;
            let version = flags.load().version;
            let (status, _, body) = get(
                &client,
                *addr,
                "/",
                &[("x-tenant-id", tenant), ("x-user-id", &user.to_string())],
            )
            .await;
            let side = body.trim().to_owned();
            answers
                .lock()
                .unwrap()
                .push((version, tenant.clone(), user, status, side));
            n += 1;
        }
    })
}

fn tenants() -> Vec<String> {
    let splits = (0..SPLITS).map(|i| format!("split-{i}"));
    let pinned = (0..PINNED).map(|i| format!("pinned-{i}"));
    splits.chain(pinned).chain(["vault".to_owned()]).collect()
}

/// Where each (tenant, user) is answered from, asked of every router: they must agree.
async fn sides(routers: &[Router]) -> HashMap<(String, usize), (StatusCode, String)> {
    let client = client();
    let mut out = HashMap::new();
    for tenant in tenants() {
        for user in 0..USERS {
            let mut seen = Vec::new();
            for r in routers {
                let (status, _, body) = get(
                    &client,
                    r.addr(),
                    "/",
                    &[("x-tenant-id", &tenant), ("x-user-id", &user.to_string())],
                )
                .await;
                let side = if status == StatusCode::OK {
                    body.trim().to_owned()
                } else {
                    String::new()
                };
                seen.push((status, side));
            }
            assert!(
                seen.windows(2).all(|w| w[0] == w[1]),
                "{tenant} user {user}: the routers disagree: {seen:?}"
            );
            out.insert((tenant.clone(), user), seen.remove(0));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evacuation_empties_a_side_on_every_router_in_one_poll_and_restore_gives_it_back() {
    let emulator = crate::dynamo::Emulator::start().await;
    let setup = Setup::new().await;
    let config = crate::dynamo::router_config_file(&setup, &emulator.url());
    let (code, out, err) = switchyard(&["flags", "create-table", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    // Splits over both sides, tenants pinned on `new`, and one sealed there.
    let store = Store::Dynamo(emulator.store().await);
    let write = |tenant: &str, placing: Placing, seal: Option<bool>| FlagWrite {
        seal,
        ..crate::dynamo::write(tenant, Some(placing), "seed", None)
    };
    let mut writes: Vec<FlagWrite> = (0..SPLITS)
        .map(|i| {
            let split = Placing::parse_split("legacy=50,new=50").unwrap();
            write(&format!("split-{i}"), split, None)
        })
        .collect();
    writes.extend((0..PINNED).map(|i| write(&format!("pinned-{i}"), pin("new"), None)));
    writes.push(write("vault", pin("new"), Some(true)));
    for result in store.write_each(&writes, None, |_| {}).await {
        result.unwrap();
    }

    // Three routers on the same table, each with its own local copy.
    let text = std::fs::read_to_string(&config).unwrap();
    let mut routers = Vec::new();
    for i in 0..3 {
        let own = text.replace("flags-cache.json", &format!("flags-cache-{i}.json"));
        let config = switchyard::Config::parse(&own, setup.dir.path(), "test").unwrap();
        routers.push(Router::start(config).await.unwrap());
    }
    let seeded = store.version().await.unwrap();
    for r in &routers {
        wait_version(r, seeded).await;
    }
    let before = sides(&routers).await;
    let on_new = |map: &HashMap<(String, usize), (StatusCode, String)>| {
        map.values().filter(|(_, side)| side == "new").count()
    };
    assert!(
        on_new(&before) > SPLITS * USERS / 4,
        "the splits use both sides"
    );

    // Under load, the evacuation, by the real CLI.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let targets = routers
        .iter()
        .map(|r| (r.addr(), r.flags().clone()))
        .collect();
    let traffic = load(targets, stop.clone(), answers.clone());
    wait_for("load to start", || answers.lock().unwrap().len() > 50).await;
    let (code, out, err) = switchyard(&[
        "flags",
        "evacuate",
        "new",
        "--to",
        "legacy",
        "--include-pinned",
        "--reason",
        "new is failing",
        "--yes",
        "--config",
        &config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("split tenants with a share on new: 12"),
        "{out}"
    );
    assert!(out.contains("pinned on new, moving to legacy: 4"), "{out}");
    assert!(
        out.contains("answered 503 while evacuated: 1\n    vault"),
        "{out}"
    );
    let evacuated = store.version().await.unwrap();
    for r in &routers {
        wait_version(r, evacuated).await;
    }
    // The one request in flight may have been picked before its router had the evacuation:
    // the count is read once it is answered, and every later request was picked after.
    let in_flight = answers.lock().unwrap().len();
    wait_for("the request in flight", || {
        answers.lock().unwrap().len() > in_flight
    })
    .await;
    let upstream_new_then = setup.new.seen.total();
    let at_write = answers.lock().unwrap().len();
    wait_for("load after the evacuation", || {
        answers.lock().unwrap().len() > at_write + 300
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    assert_eq!(
        setup.new.seen.total(),
        upstream_new_then,
        "a request reached the evacuated side after every router had the evacuation"
    );
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let (mut after, mut refused) = (0, 0);
    for (version, tenant, user, status, side) in answers.iter() {
        if tenant == "vault" && *version >= evacuated {
            // Sealed on the evacuated side: never moved, refused with its reason.
            assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "vault: {side}");
            assert!(side.contains("\"new\" is evacuated"), "{side}");
            refused += 1;
            continue;
        }
        assert_eq!(
            *status,
            StatusCode::OK,
            "{tenant} user {user} failed: {side}"
        );
        if *version >= evacuated {
            assert_eq!(
                side, "legacy",
                "{tenant} user {user} on new after the evacuation"
            );
            after += 1;
        }
    }
    assert!(
        after > 200 && refused > 0,
        "{after} answers after, {refused} refused"
    );
    drop(answers);

    // Every router says so, and `/explain` says why.
    for r in &routers {
        assert_eq!(
            metric(r, "switchyard_target_evacuated{target=\"new\"}").await,
            Some(1.0)
        );
    }
    let (_, explain) = admin_get(&routers[0], "/explain?tenant=pinned-0&path=/").await;
    assert!(
        explain.contains("because \\\"new\\\" is evacuated"),
        "{explain}"
    );

    // Restore: exactly the routing before, user by user.
    let (code, out, err) = switchyard(&[
        "flags",
        "restore",
        "new",
        "--reason",
        "new is back",
        "--config",
        &config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let restored = store.version().await.unwrap();
    for r in &routers {
        wait_version(r, restored).await;
    }
    assert_eq!(sides(&routers).await, before);
    // Restoring twice is refused, naming why; nothing is written.
    let (code, _, err) = switchyard(&[
        "flags", "restore", "new", "--reason", "again", "--config", &config,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("new is not evacuated"), "{err}");
    assert_eq!(store.version().await.unwrap(), restored);
    // Both writes are in the audit trail, with who and why.
    let history = store.history("!evacuate:new").await.unwrap();
    let reasons: Vec<&str> = history.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons, ["new is failing", "new is back"], "{history:?}");
}

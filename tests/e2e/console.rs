//! The console in a real browser: Debian's chromium, headless, driven through chromedriver
//! (WebDriver) against a real router with real upstreams. Each page is loaded; a tenant is
//! found by search and moved through the page, and the router routes it to the new side; a
//! write without the token is refused and writes nothing; hostile text renders as text; a
//! sealed tenant refuses the plain move. The screenshots in docs/console.md are made here
//! (`SWITCHYARD_SCREENSHOTS=docs/console` writes them there).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use http::StatusCode;
use serde_json::json;

use crate::support::*;

const TOKEN: &str = "console-admin-token-0123456789";
/// A reason and a tenant id written by someone hostile: they must show as text.
const HOSTILE_REASON: &str =
    r#""><img src=x onerror="window.pwned=1"><script>window.pwned=2</script>"#;
const HOSTILE_TENANT: &str = "<script>window.pwned=3</script>";
/// How long the browser is given for anything the page does.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver on a port it picks itself (`--port=0`), read from the line it prints: a port
/// chosen here and handed over could be taken by another test meanwhile.
async fn chromedriver() -> Driver {
    use std::io::BufRead;
    let mut child = Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (scripts/test.sh installs chromium-driver)");
    // Its output is read to the end (a closed pipe would stop it), the port sent on.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let said = "was started successfully on port ";
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split(said).nth(1) {
                let _ = tx.send(rest.trim_end_matches('.').parse::<u16>().unwrap());
            }
        }
    });
    let port = tokio::task::spawn_blocking(move || rx.recv_timeout(PAGE_WAIT))
        .await
        .unwrap()
        .expect("chromedriver said its port in time");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let driver = Driver { child, addr };
    // Ready once it answers its status.
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (status, _, _) = get(&client(), addr, "/status", &[]).await;
            if status == StatusCode::OK {
                return driver;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1360,1000", "--hide-scrollbars"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://{}", driver.addr))
        .await
        .expect("a chromium session")
}

/// Waits until the element at `css` exists and its text holds `needle`; returns the text.
async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    let mut last = String::new();
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await
            && let Ok(text) = el.text().await
        {
            if text.contains(needle) {
                return text;
            }
            last = text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never said {needle:?}; it says {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Picks the option `value` of the select at `css`.
async fn choose(c: &Client, css: &str, value: &str) {
    let select = c.find(Locator::Css(css)).await.unwrap();
    select.select_by_value(value).await.unwrap();
}

/// Reviews a move of the page's tenant to `to`, saying why: the plan shows, not yet written.
async fn review_move(c: &Client, why: &str, to: &str) -> String {
    type_into(c, "#action-reason", why).await;
    choose(c, "#move-target", to).await;
    click(c, "#review-move").await;
    wait_text(c, "#plan", &format!(" to {to}")).await
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let el = c.find(Locator::Css(css)).await.unwrap();
    el.clear().await.unwrap();
    el.send_keys(text).await.unwrap();
}

/// Nothing hostile ran: no dialog, no image or script element the page did not make, the
/// marker the payloads would set is unset, and the page asked for nothing but its own
/// script, style and API (a rendered `<img src=x>` would have fetched `x`).
async fn nothing_ran(c: &Client) {
    assert!(c.get_alert_text().await.is_err(), "a dialog opened");
    let origin = c
        .current_url()
        .await
        .unwrap()
        .origin()
        .ascii_serialization();
    let fetched = c
        .execute(
            "return performance.getEntriesByType('resource').map((e) => e.name);",
            vec![],
        )
        .await
        .unwrap();
    let fetched: Vec<String> = serde_json::from_value(fetched).unwrap();
    assert!(!fetched.is_empty(), "the page's own requests are listed");
    // The page's own requests, and the browser's for the tab's icon.
    let own = [
        "/ui/console.js",
        "/ui/console.css",
        "/ui/api/",
        "/shadow/",
        "/explain?",
        "/flags/",
        "/favicon.ico",
    ];
    for url in &fetched {
        let path = url
            .strip_prefix(&origin)
            .unwrap_or_else(|| panic!("{url} is another origin"));
        assert!(
            own.iter().any(|p| path.starts_with(p)),
            "the page fetched {url}"
        );
    }
    let found = c
        .execute(
            "return [window.pwned === undefined, document.querySelectorAll('img').length, \
             document.querySelectorAll('script').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(found, json!([true, 0, 1]), "[no marker, images, scripts]");
}

async fn screenshot(c: &Client, name: &str) {
    c.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = std::env::var_os("SWITCHYARD_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn answered_by(router: &switchyard::Router, tenant: &str) -> String {
    let (status, headers, _) =
        get(&client(), router.addr(), "/x", &[("x-tenant-id", tenant)]).await;
    assert_eq!(status, StatusCode::OK);
    headers["x-upstream"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_finds_moves_refuses_and_renders_hostile_text_as_text() {
    let mut setup = Setup::new().await;
    std::fs::write(setup.dir.path().join("admin.token"), TOKEN).unwrap();
    setup.extra = "admin_token_file = \"admin.token\"".into();
    let flags = json!({"version": 1, "items": [
        {"tenant": "*", "target": "legacy", "version": 1},
        {"tenant": "acme", "target": "legacy", "version": 1, "updated_by": "mallory", "reason": HOSTILE_REASON},
        {"tenant": "acme-eu", "target": "legacy", "version": 1},
        {"tenant": "globex", "weights": {"legacy": 90, "new": 10}, "version": 1},
        {"tenant": "initech", "target": "new", "sealed": true, "version": 1,
         "shadow": {"target": "legacy", "percent": 100}},
        {"tenant": HOSTILE_TENANT, "target": "legacy", "version": 1},
    ]});
    setup.write_flags(&flags.to_string());
    let router = setup.start().await;
    wait_version(&router, 1).await;
    // Traffic for the overview's charts, for the whole test.
    let traffic = {
        let addr = router.addr();
        tokio::spawn(async move {
            let c = client();
            loop {
                for tenant in ["acme-eu", "initech"] {
                    let _ = get(&c, addr, "/x", &[("x-tenant-id", tenant)]).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let driver = chromedriver().await;
    let c = browser(&driver).await;
    let ui = format!("http://{}/ui", router.admin_addr());

    // The overview: this router in the fleet, the store, both targets; the rejected item's
    // hostile tenant id shows as text.
    c.goto(&ui).await.unwrap();
    wait_text(&c, "main h1", "Overview").await;
    let main = wait_text(&c, "main", "Rejected items").await;
    assert!(main.contains("this router"), "{main}");
    assert!(
        main.contains("Target legacy") && main.contains("Target new"),
        "{main}"
    );
    let main = wait_text(&c, "main", HOSTILE_TENANT).await;
    assert!(
        main.contains("Tenants\n4") || main.contains("Tenants 4"),
        "{main}"
    );
    nothing_ran(&c).await;

    // The tenant table: a search by prefix finds acme and acme-eu, with counts by target.
    click(&c, "#nav-tenants").await;
    c.wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css("#search"))
        .await
        .unwrap();
    type_into(&c, "#search", "acme").await;
    let counts = wait_text(&c, "#results .counts", "2 of 4 tenants").await;
    assert!(
        counts.contains("legacy: 2") && counts.contains("new: 0"),
        "{counts}"
    );
    let table = wait_text(&c, "#tenant-table", "acme-eu").await;
    assert!(!table.contains("globex"), "{table}");
    assert!(
        table.contains(HOSTILE_REASON),
        "the reason, as text: {table}"
    );
    nothing_ran(&c).await;
    // A filter: sealed tenants only.
    type_into(&c, "#search", "").await;
    choose(&c, "#filter-sealed", "true").await;
    wait_text(&c, "#results .counts", "1 of 4 tenants").await;
    wait_text(&c, "#tenant-table", "initech").await;
    choose(&c, "#filter-sealed", "").await;
    type_into(&c, "#search", "acme").await;
    wait_text(&c, "#results .counts", "2 of 4 tenants").await;

    // acme's page: its flag, its pick, its hostile reason as text.
    click(&c, "#tenant-table a[href='#/tenant/acme']").await;
    wait_text(&c, "#tenant-id", "acme").await;
    let page = wait_text(&c, "main", HOSTILE_REASON).await;
    assert!(
        page.contains("Placement\nlegacy") || page.contains("Placement legacy"),
        "{page}"
    );
    click(&c, "main form button[type=submit]").await;
    wait_text(&c, "#explain-target", "legacy").await;
    nothing_ran(&c).await;

    // initech is shadowed to legacy, which answers differently: its page shows the fleet's
    // evidence and the mismatches side by side, their bodies withheld without the token.
    c.goto(&format!("{ui}#/tenant/initech")).await.unwrap();
    let evidence = wait_text(&c, "main", "Recent mismatches on").await;
    assert!(
        evidence.contains("Match rate\n0.0%") || evidence.contains("Match rate 0.0%"),
        "{evidence}"
    );
    assert!(evidence.contains("Bodies withheld"), "{evidence}");
    let bodies = c.find_all(Locator::Css(".pair pre")).await.unwrap();
    assert!(!bodies.is_empty());
    for body in bodies {
        assert_eq!(body.text().await.unwrap(), "(withheld)");
    }
    c.goto(&format!("{ui}#/tenant/acme")).await.unwrap();
    wait_text(&c, "#tenant-id", "acme").await;

    // A move without the token: the plan, then the router's refusal; nothing written.
    let plan = review_move(&c, "batch 1 from the console", "new").await;
    assert!(plan.contains("Moves from legacy to new"), "{plan}");
    assert!(plan.contains("still at version 1"), "{plan}");
    click(&c, "#plan-write").await;
    wait_text(&c, "#write-result", "Refused (401)").await;
    assert_eq!(setup.store().load().unwrap().version, 1, "nothing written");
    assert_eq!(answered_by(&router, "acme").await, "legacy");

    // With the token: the move is written, the router routes acme to new.
    type_into(&c, "#token-input", TOKEN).await;
    click(&c, "#token-use").await;
    wait_text(&c, "#token-state", "token set").await;
    wait_text(&c, "#tenant-id", "acme").await;
    review_move(&c, "batch 1 from the console", "new").await;
    click(&c, "#plan-write").await;
    wait_text(&c, "#write-result", "Written").await;
    let item = setup.store().get("acme").unwrap().unwrap();
    assert_eq!(item.target.as_deref(), Some("new"));
    assert_eq!(item.reason.as_deref(), Some("batch 1 from the console"));
    wait_version(&router, 2).await;
    assert_eq!(answered_by(&router, "acme").await, "new");

    // A move with a hold from globex's page: its requests queue on every router while it
    // flips, then go to new; sealed there in the same write.
    c.goto(&format!("{ui}#/tenant/globex")).await.unwrap();
    wait_text(&c, "#tenant-id", "globex").await;
    type_into(&c, "#action-reason", "batch 2, held").await;
    choose(&c, "#move-target", "new").await;
    click(&c, "#move-hold").await;
    click(&c, "#move-seal").await;
    click(&c, "#review-move").await;
    wait_text(&c, "#plan", "Moves from legacy 90 / new 10 to new").await;
    click(&c, "#plan-write").await;
    let log = wait_text(&c, "#write-result", ": moved").await;
    assert!(log.contains("every live router acknowledged"), "{log}");
    assert!(log.contains("hold") && log.contains("ended"), "{log}");
    let item = setup.store().get("globex").unwrap().unwrap();
    assert_eq!(
        (item.target.as_deref(), item.sealed),
        (Some("new"), true),
        "{item:?}"
    );
    assert_eq!(item.hold, None, "the hold ended with the flip");
    wait_for("globex routed to new", || {
        router
            .flags()
            .load()
            .get("globex")
            .is_some_and(|f| f.sealed)
    })
    .await;
    assert_eq!(answered_by(&router, "globex").await, "new");

    // A ramp from acme-eu's page: the routers step it to 10% on new; aborted from the
    // overview, it is back on legacy.
    c.goto(&format!("{ui}#/tenant/acme-eu")).await.unwrap();
    wait_text(&c, "#tenant-id", "acme-eu").await;
    type_into(&c, "#action-reason", "ramp acme-eu").await;
    type_into(&c, "#ramp-steps", "10,50").await;
    click(&c, "#review-ramp").await;
    wait_text(&c, "#plan", "in steps 10, 50%").await;
    click(&c, "#plan-write").await;
    wait_text(&c, "#write-result", "started").await;
    let split = BTreeMap::from([("legacy".to_owned(), 90), ("new".to_owned(), 10)]);
    let store = setup.store();
    wait_for("the ramp's first step", || {
        store.get("acme-eu").unwrap().unwrap().weights.as_ref() == Some(&split)
    })
    .await;
    c.goto(&ui).await.unwrap();
    // The page refreshes every 5 s: it shows the step once this router's snapshot has it.
    let ramp = wait_text(&c, "li.ramp", "step 1 of 2 (10% on new)").await;
    assert!(ramp.contains("ramp running"), "{ramp}");
    type_into(&c, "li.ramp .ramp-reason", "stop it").await;
    click(&c, "li.ramp .ramp-abort").await;
    wait_text(&c, "#ramp-result", "aborted").await;
    let item = store.get("acme-eu").unwrap().unwrap();
    assert_eq!(item.target.as_deref(), Some("legacy"), "{item:?}");
    let audit = item.updated_by.unwrap_or_default();
    assert_eq!(audit, "console", "who aborted it");

    // A sealed tenant: the page warns, the plain move is refused, it stays.
    c.goto(&format!("{ui}#/tenant/initech")).await.unwrap();
    let page = wait_text(&c, "main", "Sealed on new").await;
    assert!(page.contains("refused unless forced"), "{page}");
    // With the token, the mismatches' bodies: new's answer against legacy's.
    let pair = wait_text(&c, ".pair", "legacy").await;
    assert!(
        pair.contains("new") && !pair.contains("(withheld)"),
        "{pair}"
    );
    let plan = review_move(&c, "roll back", "legacy").await;
    assert!(plan.contains("refuses to move it without force"), "{plan}");
    click(&c, "#plan-write").await;
    wait_text(&c, "#write-result", "Refused (409)").await;
    let item = setup.store().get("initech").unwrap().unwrap();
    assert_eq!((item.target.as_deref(), item.version), (Some("new"), 1));
    assert_eq!(answered_by(&router, "initech").await, "new");
    screenshot(&c, "tenant").await;

    // The overview's charts: the router samples its counters every 10 s; once two samples
    // of traffic are in, each target's request rate and p99 have a line and a figure.
    c.goto(&ui).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        c.refresh().await.unwrap();
        wait_text(&c, "main h1", "Overview").await;
        let lines = c.find_all(Locator::Css(".chart polyline")).await.unwrap();
        let figures = c.find_all(Locator::Css(".chart .value")).await.unwrap();
        let mut shown = Vec::new();
        for f in &figures {
            shown.push(f.text().await.unwrap());
        }
        // Two targets, three charts each; requests/s and p99 of both show a figure.
        if lines.len() == 6 && shown.iter().filter(|v| *v != "-").count() >= 4 {
            assert!(
                shown[0].ends_with("/s") && shown[2].ends_with(" ms"),
                "{shown:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no charts: {shown:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    nothing_ran(&c).await;
    screenshot(&c, "overview").await;
    traffic.abort();

    c.close().await.unwrap();
    router.shutdown().await;
}

/// curl, a client nobody here wrote: the page comes with its security headers; a request
/// naming another site's host (a page that rebound its own name to this address) is refused
/// and reads nothing; a console write without the token is refused before its body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_sends_its_policy_and_answers_only_its_own_host() {
    let setup = Setup::new().await;
    let router = setup.start().await;
    wait_version(&router, 1).await;
    let admin = router.admin_addr();
    let curl = move |args: Vec<String>| {
        let out = Command::new("curl")
            .args(["-s", "-S", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (head, rebound, write, local) = tokio::task::spawn_blocking(move || {
        (
            curl(vec![
                "-D-".into(),
                "-o/dev/null".into(),
                format!("http://{admin}/ui"),
            ]),
            curl(vec![
                "-H".into(),
                "Host: evil.example".into(),
                "-w".into(),
                "\n%{http_code}".into(),
                format!("http://{admin}/ui/api/tenants"),
            ]),
            curl(vec![
                "-X".into(),
                "POST".into(),
                "-d".into(),
                r#"{"reason":"x"}"#.into(),
                "-w".into(),
                "\n%{http_code}".into(),
                format!("http://{admin}/ui/api/ramps/r1/abort"),
            ]),
            curl(vec![
                "-H".into(),
                format!("Host: localhost:{}", admin.port()),
                "-w".into(),
                "\n%{http_code}".into(),
                format!("http://{admin}/ui/api/overview"),
            ]),
        )
    })
    .await
    .unwrap();
    let head = head.to_ascii_lowercase();
    for want in [
        "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'",
        "frame-ancestors 'none'",
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "referrer-policy: no-referrer",
        "cache-control: no-store",
    ] {
        assert!(head.contains(want), "{want:?} in {head}");
    }
    assert!(rebound.ends_with("\n421"), "{rebound}");
    assert!(!rebound.contains("\"tenants\""), "{rebound}");
    assert!(rebound.contains("console_hosts"), "{rebound}");
    assert!(
        write.ends_with("\n403"),
        "writes are off without a token: {write}"
    );
    assert!(local.ends_with("\n200"), "{local}");
    router.shutdown().await;
}

/// On DynamoDB (the emulator): a tenant's page shows its audit trail, newest first, and the
/// overview lists the router from the fleet table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_a_tenant_page_shows_its_audit_trail_and_the_fleet_its_routers() {
    use crate::dynamo::{Emulator, router_config};
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let setup = Setup::new().await;
    let cli = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = switchyard(&args);
        assert_eq!(code, 0, "{err}");
    };
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        cli(vec![
            "flags".into(),
            "create-table".into(),
            "--store".into(),
            url2.clone(),
        ]);
        for (to, why) in [
            ("legacy", "onboard acme"),
            ("new", "batch 1 <b>moves</b> acme"),
        ] {
            cli([
                "flags", "set", "acme", "--target", to, "--reason", why, "--by", "alice",
                "--store", &url2,
            ]
            .map(String::from)
            .to_vec());
        }
    })
    .await
    .unwrap();
    let router = switchyard::Router::start(router_config(&setup, &url))
        .await
        .unwrap();
    wait_version(&router, 2).await;
    let driver = chromedriver().await;
    let c = browser(&driver).await;
    let ui = format!("http://{}/ui", router.admin_addr());

    c.goto(&format!("{ui}#/tenant/acme")).await.unwrap();
    let history = wait_text(&c, "#history", "onboard acme").await;
    let (newest, oldest) = (
        history
            .find("batch 1 <b>moves</b> acme")
            .expect("the newest, as text"),
        history.find("onboard acme").unwrap(),
    );
    assert!(newest < oldest, "newest first: {history}");
    assert!(
        history.contains("legacy → new") && history.contains("alice"),
        "{history}"
    );
    nothing_ran(&c).await;

    c.goto(&ui).await.unwrap();
    let fleet = wait_text(&c, "main", "this router").await;
    assert!(
        fleet.contains("live") && fleet.contains("dynamodb://flags"),
        "{fleet}"
    );
    c.close().await.unwrap();
    router.shutdown().await;
}

//! Shared harness for the end-to-end tests: a small, hand-built world whose policies cover
//! every case (activated and receiving, not receiving by choice, not activated, another state), a dev PKI,
//! and a real gateway on a loopback port over mutual TLS. Tests talk to it only through gRPC.

pub use interop_client::{Client, RetryPolicy};
use interop_gateway::auth::principal::Principal;
use interop_gateway::engines::{
    BackendError, CriminalHistory, GalleryBackend, IdentHit, IdentSearch,
};
use interop_gateway::server::{Gateway, ServeOptions};
use interop_gateway::world::*;
use interop_gateway::{convert, server, store};
use interop_gateway_cli::pki::{self, PkiDir};
use interop_matcher::synth::{self, CaptureModel};
use interop_matcher::{IndexedMatcher, Matcher, Tenprint};
use interop_proto::v1 as pb;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::transport::Channel;

pub const SEED: u64 = 7;
/// Activated, receives results, Houston field office.
pub const TX_RECEIVING: &str = "TX201";
/// Activated, chose not to receive results.
pub const TX_NOT_RECEIVING: &str = "TX203";
/// Never activated.
pub const TX_NOT_ACTIVATED: &str = "TX205";
/// Another state, Los Angeles field office.
pub const CA_RECEIVING: &str = "CA037";

/// People of the test world. Person 1 has an IDENT record (visa overstay) and a felony
/// conviction; person 2 an IDENT record (citizen); person 3 no record; person 4 an FBI record
/// only; person 5 an IDENT record (visa overstay) only. People 100.. fill both galleries so a
/// search has impostors to reject.
pub const OVERSTAY_FELON: u64 = 1;
pub const CITIZEN: u64 = 2;
pub const NOBODY: u64 = 3;
pub const FBI_ONLY: u64 = 4;
/// An IDENT record (visa overstay) and no criminal record: arrested solely for a minor traffic
/// offence, a detainer is operative only on conviction.
pub const OVERSTAY_NO_RECORD: u64 = 5;

pub fn ori(jurisdiction: &str) -> String {
    format!("{jurisdiction}0100")
}

fn d(s: &str) -> chrono::NaiveDate {
    s.parse().expect("date")
}

/// Arrest-rate data of the test world: one year of arrests, 1,000 per group, with a tenth on
/// minor traffic charges only; TX203 (strict traffic enforcement for everyone) six tenths.
pub fn arrests(jurisdiction: &str) -> ArrestData {
    let minor = if jurisdiction == TX_NOT_RECEIVING {
        600
    } else {
        100
    };
    ArrestData {
        year: 2011,
        groups: Group::ALL
            .iter()
            .map(|&group| GroupArrests {
                group,
                serious: 200,
                other: 800 - minor,
                minor_traffic: minor,
            })
            .collect(),
    }
}

pub fn world() -> WorldFile {
    let j = |id: &str, state: &str, office: &str, act: Option<&str>, rr: bool| Jurisdiction {
        id: id.into(),
        name: format!("County {id}"),
        state: state.into(),
        field_office: office.into(),
        agencies: vec![ori(id)],
        population: 1000,
        activated_on: act.map(d),
        receives_results: rr,
        arrests: Some(arrests(id)),
    };
    let s = |code: &str| State {
        code: code.into(),
        name: code.into(),
        population: 1000,
        declines_results: false,
        can_receive_electronically: true,
    };
    WorldFile {
        meta: WorldMeta {
            seed: SEED,
            identities: 200,
            version: 1,
        },
        states: vec![s("TX"), s("CA")],
        field_offices: vec![
            FieldOffice {
                code: "HOU".into(),
                name: "Houston".into(),
            },
            FieldOffice {
                code: "LOS".into(),
                name: "Los Angeles".into(),
            },
        ],
        jurisdictions: vec![
            j(TX_RECEIVING, "TX", "HOU", Some("2009-01-01"), true),
            j(TX_NOT_RECEIVING, "TX", "HOU", Some("2009-01-01"), false),
            j(TX_NOT_ACTIVATED, "TX", "HOU", None, true),
            j(CA_RECEIVING, "CA", "LOS", Some("2009-01-01"), true),
        ],
    }
}

pub fn fin(person: u64) -> String {
    format!("FIN{person:010}")
}

/// The synthetic biographics IDENT holds for `person` in the test world.
pub fn biographics(person: u64) -> interop_gateway::world::Biographics {
    interop_gateway::world::Biographics {
        name: format!("Person {person}"),
        date_of_birth: chrono::NaiveDate::from_ymd_opt(1980, 1, 1 + (person % 28) as u32),
        sex: if person.is_multiple_of(2) { "F" } else { "M" }.into(),
        place_of_birth: "Oaxaca, Mexico".into(),
    }
}

pub fn fbi_number(person: u64) -> String {
    format!("FBI{person:09}")
}

fn enrol(person: u64) -> Tenprint {
    synth::capture(
        &synth::master_tenprint(SEED, person),
        &CaptureModel::default(),
        0xE0 ^ person,
    )
}

/// A fresh booking capture of `person` (never the enrolment capture).
pub fn capture(person: u64, n: u64) -> Tenprint {
    synth::capture(
        &synth::master_tenprint(SEED, person),
        &CaptureModel::default(),
        0xB0_0000 + person * 1000 + n,
    )
}

type Enrolled<R> = Vec<(u64, Tenprint, R)>;

/// The enrolment templates and records of both galleries: (IDENT, FBI).
fn gallery_entries() -> (Enrolled<ImmigrationRecord>, Enrolled<CriminalRecord>) {
    let ident_people = [
        (OVERSTAY_FELON, ImmigrationStatus::VisaOverstay),
        (CITIZEN, ImmigrationStatus::UsCitizen),
        (OVERSTAY_NO_RECORD, ImmigrationStatus::VisaOverstay),
    ];
    let fbi_people = [OVERSTAY_FELON, FBI_ONLY];
    let filler = 100..160u64;
    let ident = ident_people
        .into_iter()
        .chain(filler.clone().map(|p| (p, ImmigrationStatus::LawfulStatus)))
        .map(|(p, status)| {
            let record = ImmigrationRecord {
                fin: fin(p),
                status,
                last_entry: None,
                biographics: biographics(p),
            };
            (p, enrol(p), record)
        })
        .collect();
    let fbi = fbi_people
        .into_iter()
        .chain(filler)
        .map(|p| {
            let record = CriminalRecord {
                fbi_number: fbi_number(p),
                prior_arrests: 2,
                convictions: vec![Conviction {
                    offense: Offense::Felony,
                    convicted_on: d("2005-03-04"),
                }],
            };
            (p, enrol(p), record)
        })
        .collect();
    (ident, fbi)
}

fn backend<R: Clone + Send + Sync + 'static>(entries: Enrolled<R>) -> GalleryBackend<R> {
    let matcher = IndexedMatcher::new(2);
    let mut records = BTreeMap::new();
    for (p, print, record) in entries {
        matcher.enroll(p, &print).expect("enrol");
        records.insert(p, record);
    }
    GalleryBackend::new(Arc::new(matcher), records)
}

/// Both galleries of the test world.
pub fn galleries() -> (
    GalleryBackend<ImmigrationRecord>,
    GalleryBackend<CriminalRecord>,
) {
    let (ident, fbi) = gallery_entries();
    // One set of search threads for both, as the gateway loads them.
    let slots = Arc::new(interop_gateway::engines::slots::SearchSlots::per_core());
    (
        backend(ident).with_slots(slots.clone()),
        backend(fbi).with_slots(slots),
    )
}

/// Writes the test world as a world directory (what `interop-gateway serve --world` reads).
pub fn write_world_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_json(dir, WORLD_FILE, &world())?;
    let (ident, fbi) = gallery_entries();
    fn split<R>(e: Enrolled<R>) -> (Vec<(u64, Tenprint)>, Records<R>) {
        e.into_iter().map(|(p, t, r)| ((p, t), (p, r))).unzip()
    }
    let (ident_gallery, ident_records) = split(ident);
    let (fbi_gallery, fbi_records) = split(fbi);
    write_json(dir, IDENT_RECORDS_FILE, &ident_records)?;
    write_json(dir, FBI_RECORDS_FILE, &fbi_records)?;
    interop_matcher::gallery::write_gallery(&dir.join(IDENT_GALLERY_FILE), &ident_gallery)?;
    interop_matcher::gallery::write_gallery(&dir.join(FBI_GALLERY_FILE), &fbi_gallery)?;
    Ok(())
}

/// Counts IDENT searches, to prove which bookings reach the matcher, and notes the lane each
/// waited for a core in (see `interop_gateway::engines::slots`).
pub struct CountingIdent {
    pub inner: Arc<dyn IdentSearch>,
    pub calls: AtomicUsize,
    pub lanes: std::sync::Mutex<Vec<String>>,
}

#[interop_gateway::engines::async_trait]
impl IdentSearch for CountingIdent {
    async fn search(&self, prints: Tenprint) -> Result<Option<IdentHit>, BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let lane = interop_gateway::engines::slots::current_lane();
        self.lanes.lock().unwrap().push(lane.to_string());
        self.inner.search(prints).await
    }

    fn search_slots(&self) -> Option<Arc<interop_gateway::engines::slots::SearchSlots>> {
        self.inner.search_slots()
    }
}

/// An IDENT that never answers: submissions stay unfinished (to test recovery).
pub struct StalledIdent;

#[interop_gateway::engines::async_trait]
impl IdentSearch for StalledIdent {
    async fn search(&self, _prints: Tenprint) -> Result<Option<IdentHit>, BackendError> {
        std::future::pending().await
    }
}

/// Which store a test gateway runs on.
enum StoreSpec {
    /// The embedded store in its data directory.
    Embedded,
    /// The embedded store, its file failing writes while the switch is on.
    Faulty(Arc<store::IoFaults>),
    /// This one.
    Given(store::DynStore),
}

/// A gateway under test.
pub struct TestGateway {
    pub endpoint: String,
    /// `host:port` of the plain-HTTP metrics listener.
    pub metrics_addr: String,
    pub pki: PkiDir,
    pub data: PathBuf,
    pub ident_calls: Arc<CountingIdent>,
    pub gateway: Arc<Gateway>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    dir: Arc<tempfile::TempDir>,
}

impl TestGateway {
    /// A fresh gateway with a fresh PKI and data directory.
    pub async fn start() -> TestGateway {
        Self::start_with(None).await
    }

    /// Like [`TestGateway::start`], with another IDENT backend.
    pub async fn start_with(ident: Option<Arc<dyn IdentSearch>>) -> TestGateway {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let pki = pki::init_for_world(&dir.path().join("pki"), &world()).expect("pki");
        Self::start_in(dir, pki, ident).await
    }

    /// A fresh gateway whose store file fails every write while the returned switch is on
    /// (a full disk).
    pub async fn start_with_faults() -> (TestGateway, Arc<store::IoFaults>) {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let pki = pki::init_for_world(&dir.path().join("pki"), &world()).expect("pki");
        let faults = Arc::new(store::IoFaults::default());
        let gw = Self::start_full(
            dir,
            pki,
            None,
            StoreSpec::Faulty(faults.clone()),
            None,
            None,
            None,
        )
        .await;
        (gw, faults)
    }

    /// Starts on `dir` (keeping its data); `ident` replaces the IDENT backend if given.
    pub async fn start_in(
        dir: Arc<tempfile::TempDir>,
        pki: PkiDir,
        ident: Option<Arc<dyn IdentSearch>>,
    ) -> TestGateway {
        Self::start_full(dir, pki, ident, StoreSpec::Embedded, None, None, None).await
    }

    /// A gateway whose IDENT is `shards` (shard processes), served as its `MatcherService`
    /// too, as `interop-gateway serve --ident-shards` does.
    pub async fn start_with_ident_shards(
        dir: Arc<tempfile::TempDir>,
        pki: PkiDir,
        shards: Arc<interop_gateway::engines::remote::RemoteIdent>,
    ) -> TestGateway {
        let ident: Arc<dyn IdentSearch> = shards.clone();
        let serving = server::MatcherServing::Shards(shards);
        Self::start_full(
            dir,
            pki,
            Some(ident),
            StoreSpec::Embedded,
            None,
            None,
            Some(serving),
        )
        .await
    }

    /// A fresh gateway that compacts acknowledged field-office events `retention` after
    /// their acknowledgement.
    pub async fn start_with_retention(retention: std::time::Duration) -> TestGateway {
        let options = ServeOptions {
            retention,
            ..Self::default_options()
        };
        Self::start_with_options(options, None).await
    }

    /// The options every test gateway runs with unless a test says otherwise: the defaults,
    /// with a short grace period.
    pub fn default_options() -> ServeOptions {
        ServeOptions {
            grace: std::time::Duration::from_millis(200),
            assessment_interval: std::time::Duration::from_millis(200),
            assessment_pacing: interop_gateway::rules::assessment::Pacing {
                quiet: std::time::Duration::from_millis(300),
                max_gap: std::time::Duration::from_secs(5),
            },
            ..Default::default()
        }
    }

    /// A fresh gateway with these bounds (see [`ServeOptions`]) and, if given, another IDENT.
    pub async fn start_with_options(
        options: ServeOptions,
        ident: Option<Arc<dyn IdentSearch>>,
    ) -> TestGateway {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let pki = pki::init_for_world(&dir.path().join("pki"), &world()).expect("pki");
        Self::start_full(
            dir,
            pki,
            ident,
            StoreSpec::Embedded,
            Some(options),
            None,
            None,
        )
        .await
    }

    /// A fresh gateway on `store` (e.g. a replica of a JetStream log), with these options
    /// and, if given, another IDENT.
    pub async fn start_on_store(
        store: store::DynStore,
        options: ServeOptions,
        ident: Option<Arc<dyn IdentSearch>>,
    ) -> TestGateway {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let pki = pki::init_for_world(&dir.path().join("pki"), &world()).expect("pki");
        let store = StoreSpec::Given(store);
        Self::start_full(dir, pki, ident, store, Some(options), None, None).await
    }

    async fn start_full(
        dir: Arc<tempfile::TempDir>,
        pki: PkiDir,
        ident: Option<Arc<dyn IdentSearch>>,
        store: StoreSpec,
        options: Option<ServeOptions>,
        listen: Option<std::net::SocketAddr>,
        matcher: Option<server::MatcherServing>,
    ) -> TestGateway {
        let data = dir.path().join("data");
        let (ident_backend, criminal) = galleries();
        // The IDENT gallery's matcher is also served as `MatcherService` (admin only), unless
        // the test serves another.
        let matcher =
            matcher.unwrap_or_else(|| server::MatcherServing::InProcess(ident_backend.matcher()));
        let inner: Arc<dyn IdentSearch> = ident.unwrap_or_else(|| Arc::new(ident_backend));
        let counting = Arc::new(CountingIdent {
            inner,
            calls: AtomicUsize::new(0),
            lanes: Default::default(),
        });
        let fbi = criminal.matcher();
        let criminal: Arc<dyn CriminalHistory> = Arc::new(criminal);
        // The previous gateway on this directory may still be releasing its database file.
        let open = || -> store::StoreResult<store::DynStore> {
            match &store {
                StoreSpec::Embedded => store::open_embedded(&data),
                StoreSpec::Faulty(f) => Ok(Arc::new(store::RedbStore::open_with_faults(
                    &data,
                    f.clone(),
                )?)),
                StoreSpec::Given(s) => Ok(s.clone()),
            }
        };
        let mut store = open();
        for _ in 0..100 {
            if store.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            store = open();
        }
        let gateway = Gateway::start(
            world(),
            store.expect("store"),
            counting.clone(),
            criminal,
            Some(matcher),
            options.unwrap_or_else(Self::default_options),
        )
        .await
        .expect("gateway start");
        gateway.serve_fbi_gallery(fbi);
        let addr = listen.unwrap_or_else(|| "127.0.0.1:0".parse().expect("address"));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let endpoint = format!("https://{}", listener.local_addr().expect("addr"));
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let tls = server::server_tls(&pki).expect("tls");
        let (mstop_tx, mstop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.clone().serve(listener, tls, async {
            let _ = rx.await;
            let _ = mstop_tx.send(());
        }));
        let ml = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let metrics_addr = ml.local_addr().expect("addr").to_string();
        tokio::spawn(gateway.clone().serve_metrics(ml, async {
            let _ = mstop_rx.await;
        }));
        TestGateway {
            endpoint,
            metrics_addr,
            pki,
            data,
            ident_calls: counting,
            gateway,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Stops the server (as a shutdown would) and starts a new one on the same data.
    pub async fn restart(mut self, ident: Option<Arc<dyn IdentSearch>>) -> TestGateway {
        self.shutdown().await;
        let (dir, pki) = (self.dir.clone(), self.pki.clone());
        drop(self);
        Self::start_in(dir, pki, ident).await
    }

    /// Stops the server and starts a new one on the same data with `options`.
    pub async fn restart_with_options(mut self, options: ServeOptions) -> TestGateway {
        self.shutdown().await;
        let (dir, pki) = (self.dir.clone(), self.pki.clone());
        drop(self);
        Self::start_full(
            dir,
            pki,
            None,
            StoreSpec::Embedded,
            Some(options),
            None,
            None,
        )
        .await
    }

    /// Stops the server and starts a new one on the same data and the same port, so clients
    /// that were connected can reconnect by themselves.
    pub async fn restart_on_same_port(mut self) -> TestGateway {
        self.shutdown().await;
        let (dir, pki) = (self.dir.clone(), self.pki.clone());
        let addr = self
            .endpoint
            .trim_start_matches("https://")
            .parse()
            .expect("endpoint address");
        drop(self);
        Self::start_full(dir, pki, None, StoreSpec::Embedded, None, Some(addr), None).await
    }

    pub async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// A client-library connection as `who` (what every test and the simulator use).
    pub async fn client(&self, who: Principal) -> Client {
        pki::connect_client(&self.endpoint, &self.pki, &who)
            .await
            .expect("connect")
    }

    pub async fn channel(&self, who: Principal) -> Channel {
        self.client(who).await.channel()
    }

    pub async fn bureau(
        &self,
        state: &str,
    ) -> pb::submission_service_client::SubmissionServiceClient<Channel> {
        pb::submission_service_client::SubmissionServiceClient::new(
            self.channel(Principal::Bureau {
                state: state.into(),
            })
            .await,
        )
    }

    /// Books `person` under `tcn` in `jurisdiction` as `state`'s bureau and waits until the
    /// submission has completed (at most 30 s).
    pub async fn book(&self, state: &str, tcn: &str, jurisdiction: &str, person: u64) {
        self.bureau(state)
            .await
            .submit(booking(tcn, jurisdiction, person))
            .await
            .unwrap();
        wait_completed(self, state, tcn).await;
    }

    pub async fn office(
        &self,
        office: &str,
    ) -> pb::field_office_service_client::FieldOfficeServiceClient<Channel> {
        pb::field_office_service_client::FieldOfficeServiceClient::new(
            self.channel(Principal::FieldOffice {
                office: office.into(),
            })
            .await,
        )
    }

    pub async fn admin(&self) -> pb::admin_service_client::AdminServiceClient<Channel> {
        pb::admin_service_client::AdminServiceClient::new(self.channel(Principal::Admin).await)
    }

    pub async fn counters(&self) -> BTreeMap<String, u64> {
        self.admin()
            .await
            .get_counters(pb::GetCountersRequest {})
            .await
            .expect("counters")
            .into_inner()
            .values
            .into_iter()
            .collect()
    }

    /// Scrapes `/metrics` with a minimal HTTP/1.0 GET and returns the body.
    pub async fn scrape(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.metrics_addr)
            .await
            .expect("connect metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let (head, body) = buf.split_once("\r\n\r\n").expect("http response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_string()
    }

    pub fn ident_searches(&self) -> usize {
        self.ident_calls.calls.load(Ordering::SeqCst)
    }

    /// The lane each IDENT search waited for a core in, in order.
    pub fn ident_lanes(&self) -> Vec<String> {
        self.ident_calls.lanes.lock().unwrap().clone()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A field office's decision to lodge a detainer (reason: a criminal priority) on `tcn` of
/// `state`, the jail releasing the person at `release`.
pub fn detain(state: &str, tcn: &str, release: prost_types::Timestamp) -> pb::DecideRequest {
    pb::DecideRequest {
        state: state.into(),
        tcn: tcn.into(),
        action: pb::Action::Detainer as i32,
        reasons: vec![pb::Reason::CriminalPriority as i32],
        scheduled_release: Some(release),
    }
}

/// A valid booking of `person` in `jurisdiction`, booked on 2011-06-01.
pub fn booking(tcn: &str, jurisdiction: &str, person: u64) -> pb::Submission {
    pb::Submission {
        tcn: tcn.into(),
        ori: ori(jurisdiction),
        jurisdiction_id: jurisdiction.into(),
        booked_at: Some(prost_types::Timestamp {
            seconds: 1_306_929_600,
            nanos: 0,
        }),
        charges: vec![pb::Charge {
            code: "13-1203".into(),
            class: pb::OffenseClass::Misdemeanor as i32,
        }],
        biographics: Some(pb::Biographics {
            name: "Synthetic Person".into(),
            date_of_birth: "1980-02-03".into(),
            sex: pb::Sex::Male as i32,
            place_of_birth: "Synthetic".into(),
            race: pb::Race::White as i32,
            ethnicity: pb::Ethnicity::Hispanic as i32,
        }),
        fingers: convert::tenprint_to_pb(&capture(person, tcn.len() as u64)),
        ..Default::default()
    }
}

/// Reads a field office's stream from `after` without following (what is stored now).
pub async fn office_log(
    gw: &TestGateway,
    office: &str,
    after: Option<u64>,
) -> Vec<pb::FieldOfficeNotification> {
    let c = gw
        .client(Principal::FieldOffice {
            office: office.into(),
        })
        .await;
    let mut s = c.subscription(after, false);
    let mut out = vec![];
    while let Some(n) = s.next().await.expect("message") {
        out.push(n);
    }
    out
}

/// Reads a bureau's response log from the start without following.
pub async fn bureau_log(gw: &TestGateway, state: &str) -> Vec<pb::BureauResponse> {
    let c = gw
        .client(Principal::Bureau {
            state: state.into(),
        })
        .await;
    let mut s = c.follow_responses(None, false);
    let mut out = vec![];
    while let Some(r) = s.next().await.expect("message") {
        out.push(r);
    }
    out
}

/// The whole disclosure audit (filtered by `tcn` and/or `recipient`, empty for all) through
/// `ListDisclosures` as admin, `page_size` at a time, checking each page honours it.
pub async fn list_disclosures(
    gw: &TestGateway,
    tcn: &str,
    recipient: &str,
    page_size: u32,
) -> Vec<pb::Disclosure> {
    let mut admin = gw.admin().await;
    let mut out = vec![];
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_disclosures(pb::ListDisclosuresRequest {
                tcn: tcn.into(),
                recipient: recipient.into(),
                page_size,
                page_token,
            })
            .await
            .expect("list disclosures")
            .into_inner();
        assert!(
            page.disclosures.len() <= page_size as usize,
            "page_size is honoured"
        );
        out.extend(page.disclosures);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// Waits until `tcn` has completed (polling GetStatus), at most 30 s.
pub async fn wait_completed(gw: &TestGateway, state: &str, tcn: &str) {
    let mut c = gw.bureau(state).await;
    for _ in 0..600 {
        let s = match c.get_status(pb::GetStatusRequest { tcn: tcn.into() }).await {
            Ok(s) => s.into_inner(),
            // Past the bureau's read rate (tests that wait on many at once): wait and ask again.
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            Err(s) => panic!("status: {s:?}"),
        };
        if s.stage == pb::Stage::Completed as i32 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{tcn} did not complete in 30 s");
}

/// The real gateway program as a child process, for the tests that must run the very
/// program operators run (the `kill -9` test, the log test). The binary is the test crate's
/// `interop-gateway-under-test`, whose path only an integration test knows
/// (`env!("CARGO_BIN_EXE_interop-gateway-under-test")`).
pub mod program {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Stdio;

    /// Where one gateway's world, PKI, data and log live.
    pub struct Dirs {
        pub pki: PkiDir,
        pub world: PathBuf,
        pub data: PathBuf,
        /// Its stdout and stderr, appended across restarts.
        pub log: PathBuf,
    }

    impl Dirs {
        /// The test world, its PKI, and empty data under `dir`.
        pub fn new(dir: &Path) -> Dirs {
            let d = Dirs {
                pki: pki::init_for_world(&dir.join("pki"), &world()).expect("pki"),
                world: dir.join("world"),
                data: dir.join("data"),
                log: dir.join("gateway.log"),
            };
            write_world_dir(&d.world).expect("world");
            d
        }
    }

    pub struct Running {
        pub child: tokio::process::Child,
        pub endpoint: String,
    }

    /// The last 40 lines of a log file, for failure messages.
    pub fn log_tail(log: &Path) -> String {
        let s = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Starts the gateway program `bin` with `extra` flags and `RUST_LOG=rust_log`, and
    /// waits until it answers an admin call over mutual TLS.
    pub async fn start(bin: &str, d: &Dirs, extra: &[&str], rust_log: &str) -> Running {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&d.log)
            .expect("log file");
        let mut child = tokio::process::Command::new(bin)
            .args(extra)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--pki")
            .arg(&d.pki.0)
            .arg("--world")
            .arg(&d.world)
            .arg("--data")
            .arg(&d.data)
            .args(["--shards", "2", "--concurrency", "8", "--grace-secs", "1"])
            .arg("--no-metrics")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the gateway");
        let endpoint = format!("https://127.0.0.1:{port}");
        for _ in 0..600 {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("gateway exited with {status}:\n{}", log_tail(&d.log));
            }
            if let Ok(ch) = pki::connect(&endpoint, &d.pki, &Principal::Admin).await
                && pb::admin_service_client::AdminServiceClient::new(ch)
                    .get_counters(pb::GetCountersRequest {})
                    .await
                    .is_ok()
            {
                return Running { child, endpoint };
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("gateway did not come up:\n{}", log_tail(&d.log));
    }
}

/// `NAME VALUE` from a benchmark example's arguments, parsed; `default` when it is absent or
/// does not parse.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`th percentile (nearest rank) of `sorted` (ascending); `None` when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let i = ((p / 100.0) * last as f64).round() as usize;
    Some(sorted[i.min(last)])
}

//! The store on a PostgreSQL server, for workers on several machines: `--db
//! postgres://user@host:port/dbname`. Connection settings follow libpq's: the URL first, then
//! the standard `PG*` environment variables, then `.pgpass` for the password; `sslmode` takes
//! libpq's values. The store's identity is a `lossc_store` table (application and schema
//! version) in the connection's schema; a schema holding other tables and no such row is not a
//! store, and is never extended.

use super::{Conn, Dialect, Row, SCHEMA_VERSION, SqlError, StoreError, Val};
use postgres::types::{IsNull, ToSql, Type};
use std::collections::HashMap;
use std::error::Error;
use std::sync::Mutex;
use std::time::Duration;

/// The application a PostgreSQL store records.
const APPLICATION: &str = "lossc";

const SCHEMA: &str = "
CREATE TABLE runs (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    settings TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE candidates (
    run TEXT NOT NULL,
    seq BIGINT NOT NULL,
    genome TEXT,
    text TEXT NOT NULL,
    key TEXT,
    verdict TEXT NOT NULL,
    sign DOUBLE PRECISION,
    phenotype BYTEA,
    PRIMARY KEY (run, seq)
);
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL,
    spec TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    worker TEXT,
    claimed DOUBLE PRECISION,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION,
    error TEXT,
    UNIQUE (key, spec)
);
CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE TABLE results (
    key TEXT NOT NULL,
    spec TEXT NOT NULL,
    fitness DOUBLE PRECISION NOT NULL,
    test_accuracy DOUBLE PRECISION,
    metrics TEXT NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    worker TEXT NOT NULL,
    finished DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, spec)
);
CREATE TABLE population (
    run TEXT NOT NULL,
    position BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (run, position)
);
CREATE TABLE lossc_store (
    application TEXT NOT NULL,
    version INTEGER NOT NULL
);
";

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    /// Encrypted, the server's certificate not checked (unless a root certificate is given).
    Require,
    /// Encrypted, the certificate signed by a trusted root.
    VerifyCa,
    /// As `VerifyCa`, and issued to the host connected to.
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(format!(
                    "sslmode `{s}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }
}

/// A PostgreSQL store's address as the URL gives it; what it leaves out comes from the
/// environment when connecting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PgTarget {
    pub user: Option<String>,
    password: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<String>,
    pub connect_timeout: Option<u64>,
}

/// Undoes `%XX` escapes.
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| format!("a bad %-escape at `{}`", &s[i..s.len().min(i + 3)]))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "%-escapes that are not UTF-8".to_string())
}

/// Escapes what a URL component cannot hold as it is.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (c as char).to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect()
}

impl std::str::FromStr for PgTarget {
    type Err = String;
    /// `postgres[ql]://[user[:password]@][host][:port][/dbname][?param=value&...]`, with the
    /// parameters host, port, user, password, dbname, sslmode, sslrootcert and
    /// connect_timeout (libpq's URI form, one host).
    fn from_str(url: &str) -> Result<PgTarget, String> {
        let bad = |why: String| format!("--db {}: {why}", redact(url));
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| bad("a PostgreSQL URL starts with postgres:// or postgresql://".into()))?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let mut t = PgTarget::default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(u) = userinfo {
            let (user, password) = match u.split_once(':') {
                Some((user, pw)) => (user, Some(pw)),
                None => (u, None),
            };
            t.user = Some(decode(user).map_err(bad)?).filter(|s| !s.is_empty());
            t.password = password.map(decode).transpose().map_err(bad)?;
        }
        if hostport.contains(',') {
            return Err(bad("several hosts are not supported; give one".into()));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed [ in the host".into()))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        t.host = Some(decode(&host).map_err(bad)?).filter(|s| !s.is_empty());
        t.port = port.filter(|p| !p.is_empty()).map(|p| parse_port(p).map_err(bad)).transpose()?;
        t.dbname = Some(decode(path).map_err(bad)?).filter(|s| !s.is_empty());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| bad(format!("parameter `{pair}` has no value")))?;
            let v = decode(v).map_err(bad)?;
            match k {
                "host" => t.host = Some(v),
                "port" => t.port = Some(parse_port(&v).map_err(bad)?),
                "user" => t.user = Some(v),
                "password" => t.password = Some(v),
                "dbname" => t.dbname = Some(v),
                "sslmode" => t.sslmode = Some(v.parse().map_err(bad)?),
                "sslrootcert" => t.sslrootcert = Some(v),
                "connect_timeout" => {
                    t.connect_timeout =
                        Some(v.parse().map_err(|_| bad(format!("connect_timeout `{v}` is not seconds")))?)
                }
                "application_name" => {}
                _ => return Err(bad(format!("unknown parameter `{k}`"))),
            }
        }
        Ok(t)
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse().map_err(|_| format!("port `{p}` is not a port number"))
}

/// A URL with its password taken out, for messages about a URL that did not parse.
fn redact(url: &str) -> String {
    let mut s = url.to_string();
    if let Some(start) = s.find("://").map(|i| i + 3) {
        let end = s[start..].find(['/', '?']).map_or(s.len(), |i| start + i);
        if let Some(at) = s[start..end].rfind('@').map(|i| start + i)
            && let Some(colon) = s[start..at].find(':').map(|i| start + i)
        {
            s.replace_range(colon..at, ":***");
        }
    }
    if let Some(q) = s.find("password=").map(|i| i + "password=".len()) {
        let end = s[q..].find('&').map_or(s.len(), |i| q + i);
        s.replace_range(q..end, "***");
    }
    s
}

/// The URL without its password.
impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "postgres://")?;
        if let Some(u) = &self.user {
            write!(f, "{}@", encode(u))?;
        }
        match &self.host {
            Some(h) if !h.starts_with('/') && h.contains(':') => write!(f, "[{h}]")?,
            Some(h) if !h.starts_with('/') => write!(f, "{h}")?,
            _ => {}
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "/{}", self.dbname.as_deref().map(encode).unwrap_or_default())?;
        let mut params = Vec::new();
        if let Some(h) = self.host.as_ref().filter(|h| h.starts_with('/')) {
            params.push(format!("host={}", encode(h)));
        }
        if let Some(m) = self.sslmode {
            params.push(format!("sslmode={}", format!("{m:?}").to_lowercase().replace("verify", "verify-")));
        }
        if !params.is_empty() {
            write!(f, "?{}", params.join("&"))?;
        }
        Ok(())
    }
}

/// What a connection uses, once the environment has filled in what the URL left out.
struct Resolved {
    host: String,
    port: u16,
    user: String,
    dbname: String,
    password: Option<String>,
    sslmode: SslMode,
    sslrootcert: Option<String>,
    timeout: u64,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The user this process runs as, libpq's default user name.
fn os_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; it is read at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned();
        }
    }
    env("USER").unwrap_or_else(|| "postgres".into())
}

impl PgTarget {
    fn resolve(&self) -> Result<Resolved, String> {
        let port = match self.port {
            Some(p) => p,
            None => {
                env("PGPORT").map(|p| parse_port(&p).map_err(|e| format!("PGPORT: {e}"))).transpose()?.unwrap_or(5432)
            }
        };
        let host = self.host.clone().or_else(|| env("PGHOST")).unwrap_or_else(|| {
            // libpq's default on Debian: the local server's socket, when there is one.
            let dir = "/var/run/postgresql";
            if std::path::Path::new(&format!("{dir}/.s.PGSQL.{port}")).exists() {
                dir.into()
            } else {
                "localhost".into()
            }
        });
        let user = self.user.clone().or_else(|| env("PGUSER")).unwrap_or_else(os_user);
        let dbname = self.dbname.clone().or_else(|| env("PGDATABASE")).unwrap_or_else(|| user.clone());
        let sslmode = match self.sslmode {
            Some(m) => m,
            None => env("PGSSLMODE")
                .map(|m| m.parse().map_err(|e| format!("PGSSLMODE: {e}")))
                .transpose()?
                .unwrap_or(SslMode::Prefer),
        };
        let timeout = match self.connect_timeout {
            Some(t) => t,
            None => env("PGCONNECT_TIMEOUT")
                .map(|t| t.parse().map_err(|_| format!("PGCONNECT_TIMEOUT `{t}` is not seconds")))
                .transpose()?
                .unwrap_or(10),
        };
        let password = self
            .password
            .clone()
            .or_else(|| env("PGPASSWORD"))
            .or_else(|| pgpass(if host.starts_with('/') { "localhost" } else { &host }, port, &dbname, &user));
        let sslrootcert = self.sslrootcert.clone().or_else(|| env("PGSSLROOTCERT"));
        Ok(Resolved { host, port, user, dbname, password, sslmode, sslrootcert, timeout })
    }
}

/// The password `.pgpass` (or `$PGPASSFILE`) holds for this server, database and user: its
/// first matching `host:port:database:user:password` line, `*` matching anything. Like
/// libpq, a file others can read is ignored, with a warning.
fn pgpass(host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = env("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|h| format!("{h}/.pgpass").into()))?;
    let meta = std::fs::metadata(&path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "warning: password file {} has group or world access and is ignored; permissions should be u=rw (0600) or less",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let port = port.to_string();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        // Fields split at unescaped colons; `\:` and `\\` stand for themselves.
        let mut fields = vec![String::new()];
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => fields.last_mut()?.extend(chars.next()),
                ':' if fields.len() < 5 => fields.push(String::new()),
                c => fields.last_mut()?.push(c),
            }
        }
        if fields.len() == 5
            && [host, port.as_str(), dbname, user].iter().zip(&fields).all(|(want, f)| f == "*" || f == want)
        {
            return fields.pop();
        }
    }
    None
}

/// An error from the server as one line: its severity and message, or the driver's account.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => {
            let mut s = e.to_string();
            let mut src = e.source();
            while let Some(c) = src {
                let c = c.to_string();
                if !s.contains(&c) {
                    s = format!("{s}: {c}");
                }
                src = c.is_empty().then_some(()).and(None);
            }
            s
        }
    }
}

fn connect(r: &Resolved, at: &str) -> Result<postgres::Client, StoreError> {
    let fail = |message: String, input: bool| StoreError::Connect { path: at.to_string(), message, input };
    let mut c = postgres::Config::new();
    c.host(&r.host).port(r.port).user(&r.user).dbname(&r.dbname).application_name("lossc");
    c.connect_timeout(Duration::from_secs(r.timeout.max(1)));
    if let Some(p) = &r.password {
        c.password(p);
    }
    let socket = r.host.starts_with('/');
    let result = match r.sslmode {
        SslMode::Disable => c.connect(postgres::NoTls),
        SslMode::Allow | SslMode::Prefer if socket => c.connect(postgres::NoTls),
        _ if socket => {
            return Err(fail(
                format!("sslmode={:?} asks for TLS, which a Unix socket does not carry", r.sslmode),
                true,
            ));
        }
        mode => {
            let mut b = native_tls::TlsConnector::builder();
            let check_chain = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
                || (mode == SslMode::Require && r.sslrootcert.is_some());
            b.danger_accept_invalid_certs(!check_chain);
            b.danger_accept_invalid_hostnames(mode != SslMode::VerifyFull);
            if let Some(path) = &r.sslrootcert {
                let pem = std::fs::read(path).map_err(|e| fail(format!("sslrootcert {path}: {e}"), true))?;
                let cert = native_tls::Certificate::from_pem(&pem)
                    .map_err(|e| fail(format!("sslrootcert {path}: {e}"), true))?;
                b.add_root_certificate(cert);
            }
            let tls = b.build().map_err(|e| fail(format!("TLS: {e}"), false))?;
            let ssl = if matches!(mode, SslMode::Allow | SslMode::Prefer) {
                postgres::config::SslMode::Prefer
            } else {
                postgres::config::SslMode::Require
            };
            c.ssl_mode(ssl).connect(postgres_native_tls::MakeTlsConnector::new(tls))
        }
    };
    result.map_err(|e| {
        // Wrong password or user, no such database, or no password at all: the URL (or the
        // environment) is what to fix.
        let mut message = describe(&e);
        let missing = e.code().is_none() && message.contains("password missing");
        if missing {
            message.push_str(" (give it in the URL, PGPASSWORD or ~/.pgpass)");
        }
        let input = missing || e.code().is_some_and(|c| ["28P01", "28000", "3D000"].contains(&c.code()));
        fail(message, input)
    })
}

pub(super) struct Postgres {
    conn: Mutex<(postgres::Client, HashMap<String, postgres::Statement>)>,
}

/// Connects to the store at `t` (`at` names it in errors), checks that the schema is a lossc
/// store or empty, and creates the tables in an empty one.
pub(super) fn open(t: &PgTarget, at: &str) -> Result<Postgres, StoreError> {
    let r = t.resolve().map_err(|e| StoreError::Url(format!("{at}: {e}")))?;
    let client = connect(&r, at)?;
    let p = Postgres { conn: Mutex::new((client, HashMap::new())) };
    let err = |source: SqlError| StoreError::Sql { path: at.to_string(), source };
    let not_ours = |why: String| StoreError::NotAStore { path: at.to_string(), why };
    // One process sets a new store up; the others wait for it and find it made.
    p.batch("BEGIN").map_err(err)?;
    let checked = (|| {
        p.query("SELECT pg_advisory_xact_lock(1280266067)", &[]).map_err(err)?;
        let rows = p
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1",
                &[],
            )
            .map_err(err)?;
        let tables: Vec<String> = rows.iter().filter_map(|r| r.opt_text(0).ok().flatten()).collect();
        if tables.is_empty() {
            p.batch(SCHEMA).map_err(err)?;
            p.execute(
                "INSERT INTO lossc_store (application, version) VALUES ($1, $2)",
                &[Val::from(APPLICATION), Val::Int(SCHEMA_VERSION as i64)],
            )
            .map_err(err)?;
            return Ok(());
        }
        if !tables.iter().any(|t| t == "lossc_store") {
            let shown = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            return Err(not_ours(format!("a PostgreSQL database whose schema holds other tables: {shown}")));
        }
        let rows = p.query("SELECT application, CAST(version AS BIGINT) FROM lossc_store", &[]).map_err(err)?;
        match rows.first().map(|r| (r.opt_text(0), r.int(1))) {
            Some((Ok(Some(app)), Ok(v))) if app == APPLICATION && v > SCHEMA_VERSION as i64 => {
                Err(StoreError::Newer { path: at.to_string(), version: v as i32 })
            }
            Some((Ok(Some(app)), Ok(v))) if app == APPLICATION && v == SCHEMA_VERSION as i64 => Ok(()),
            _ => Err(not_ours("its lossc_store table does not name a lossc store of a known version".into())),
        }
    })();
    match checked {
        Ok(()) => p.batch("COMMIT").map_err(err)?,
        Err(e) => {
            let _ = p.batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(p)
}

impl ToSql for Val {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Val::Int(v) if *ty == Type::FLOAT8 => (*v as f64).to_sql(ty, out),
            Val::Int(v) => v.to_sql(ty, out),
            Val::Real(v) => v.to_sql(ty, out),
            Val::Text(s) => s.to_sql(ty, out),
            Val::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A column of a row as a [`Val`], by its type.
fn val(row: &postgres::Row, i: usize) -> Result<Val, postgres::Error> {
    let ty = row.columns()[i].type_();
    Ok(match *ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map_or(Val::Null, Val::Int),
        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map_or(Val::Null, |v| Val::Int(v as i64)),
        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map_or(Val::Null, |v| Val::Int(v as i64)),
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map_or(Val::Null, |v| Val::Int(v as i64)),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map_or(Val::Null, Val::Real),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map_or(Val::Null, |v| Val::Real(v as f64)),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map_or(Val::Null, Val::Blob),
        Type::VOID => Val::Null,
        _ => row.try_get::<_, Option<String>>(i)?.map_or(Val::Null, Val::Text),
    })
}

impl Postgres {
    /// Runs `f` on the client with the statement for `sql`, prepared once per connection.
    fn with<T>(
        &self,
        sql: &str,
        f: impl FnOnce(&mut postgres::Client, &postgres::Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, SqlError> {
        let mut guard = self.conn.lock().map_err(|_| "the connection's lock was poisoned")?;
        let (client, cache) = &mut *guard;
        let st = match cache.get(sql) {
            Some(st) => st.clone(),
            None => {
                let st = client.prepare(sql).map_err(|e| describe(&e))?;
                cache.insert(sql.to_string(), st.clone());
                st
            }
        };
        f(client, &st).map_err(|e| describe(&e).into())
    }
}

fn params(args: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Conn for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, SqlError> {
        self.with(sql, |c, st| c.execute(st, &params(args)))
    }

    fn query(&self, sql: &str, args: &[Val]) -> Result<Vec<Row>, SqlError> {
        let rows = self.with(sql, |c, st| c.query(st, &params(args)))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(Row((0..r.len()).map(|i| val(r, i)).collect::<Result<_, _>>().map_err(|e| describe(&e))?));
        }
        Ok(out)
    }

    fn batch(&self, sql: &str) -> Result<(), SqlError> {
        let mut guard = self.conn.lock().map_err(|_| "the connection's lock was poisoned")?;
        guard.0.batch_execute(sql).map_err(|e| describe(&e).into())
    }

    fn integrity(&self) -> Result<Option<String>, SqlError> {
        // The server checks its own files; there is nothing for a client to ask.
        Ok(None)
    }
}

//! One connection pool for either backend. SQL is shared where the dialects agree (`$N`
//! placeholders work on both); the event log keeps its backend-specific statements itself.

use std::{fmt::Write, path::Path, str::FromStr, sync::OnceLock, time::Duration};

use sqlx::{
    AnyConnection, AnyPool, Connection, Executor, any::AnyPoolOptions, migrate::Migrator,
    postgres::PgConnectOptions, sqlite::SqliteConnectOptions,
};

/// Which database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, sqlx::Error> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(sqlx::Error::Configuration(
                format!("unsupported database URL {url:?}: use sqlite:// or postgres://").into(),
            ))
        }
    }
}

/// Every SQLite connection's settings. WAL lets readers run beside the single writer;
/// synchronous=NORMAL keeps every committed transaction across a process crash (only an OS
/// crash or power loss can drop the last few), which is the documented trade for group
/// commit speed. A 16 MiB page cache per connection keeps batch writes from spilling pages;
/// temp_store=MEMORY keeps a multi-row statement's undo journal in memory instead of a
/// temporary file it writes page by page.
/// Public so that a second, typed pool on the same file (the job queue's) behaves the same.
pub const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384; \
     PRAGMA temp_store = MEMORY;";

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Our own migrations table, so job-queue crates that also use sqlx's default
/// `_sqlx_migrations` table cannot mistake our history for theirs.
const MIGRATIONS_TABLE: &str = "switchyard_migrations";

/// Limits every PostgreSQL session of the service sets, so that a session holding a lock
/// too long (the event log's append lock, a row) or a runaway statement makes the others
/// fail with a clear error instead of waiting without end. Zero turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// How long a statement waits for a lock (`lock_timeout`).
    pub lock_timeout: Duration,
    /// How long a statement may run (`statement_timeout`).
    pub statement_timeout: Duration,
    /// How long a session may sit idle inside a transaction before the server ends it,
    /// releasing its locks (`idle_in_transaction_session_timeout`).
    pub idle_in_transaction_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(30),
        }
    }
}

impl SessionLimits {
    /// For maintenance that holds one long transaction (a rebuild): no statement or idle
    /// limit; locks are still waited for only so long.
    pub fn for_maintenance(self) -> Self {
        Self {
            statement_timeout: Duration::ZERO,
            idle_in_transaction_timeout: Duration::ZERO,
            ..self
        }
    }

    /// The `SET` statements that apply them to a session.
    fn setup_sql(&self) -> String {
        format!(
            "SET lock_timeout = {}; SET statement_timeout = {}; \
             SET idle_in_transaction_session_timeout = {};",
            self.lock_timeout.as_millis(),
            self.statement_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis()
        )
    }
}

#[derive(Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
    /// Where it was opened, for the job queue's typed pool on the same database. Not shown
    /// by `Debug`: it may carry a password.
    url: std::sync::Arc<str>,
    limits: SessionLimits,
    /// SQLite's one write lock, taken in turn within this process: a writer that finds it
    /// held would sleep in the busy handler's growing steps (1, 2, 5, 10… ms) instead of
    /// starting the moment it is free.
    write_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A transaction that will write, holding this process's turn at SQLite's write lock until
/// it ends. Derefs to its connection, to run statements on.
pub struct WriteTransaction {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTransaction {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTransaction {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects without touching the schema, with the default [`SessionLimits`].
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        Self::connect_with(url, SessionLimits::default()).await
    }

    /// Connects without touching the schema. A database that cannot be reached is reported
    /// at once with its cause (the pool alone would retry until its timeout and report only
    /// that it timed out).
    pub async fn connect_with(url: &str, limits: SessionLimits) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        if backend == Backend::Sqlite {
            create_sqlite_file(url)?;
        }
        let first = AnyConnection::connect(url)
            .await
            .map_err(|error| unreachable_database(backend, url, error))?;
        first.close().await?;
        let setup = limits.setup_sql();
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10));
        let options = match backend {
            Backend::Sqlite => options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            }),
            Backend::Postgres => options.after_connect(move |conn, _| {
                let setup = setup.clone();
                Box::pin(async move {
                    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(setup)))
                        .await?;
                    Ok(())
                })
            }),
        };
        let pool = options.connect(url).await?;
        Ok(Self {
            pool,
            backend,
            url: url.into(),
            limits,
            write_turn: Default::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// What another pool on this database runs on each new connection (the job queue's),
    /// so that its sessions keep the same [`SessionLimits`]. PostgreSQL only.
    pub fn session_setup(&self) -> String {
        self.limits.setup_sql()
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        Self::open_with(url, SessionLimits::default()).await
    }

    pub async fn open_with(url: &str, limits: SessionLimits) -> Result<Self, sqlx::Error> {
        let db = Self::connect_with(url, limits).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// A transaction that will write. SQLite takes its write lock at `BEGIN IMMEDIATE`, so a
    /// transaction that reads first cannot fail later to upgrade its lock; this process's
    /// writers take turns at it. Never begin a second one while holding one.
    pub async fn begin_write(&self) -> Result<WriteTransaction, sqlx::Error> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let turn = self.write_turn.clone().lock_owned().await;
                WriteTransaction {
                    tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
                    _turn: Some(turn),
                }
            }
            Backend::Postgres => WriteTransaction {
                tx: self.pool.begin().await?,
                _turn: None,
            },
        })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        let mut migrator = match self.backend {
            Backend::Sqlite => clone_migrator(&SQLITE_MIGRATIONS),
            Backend::Postgres => clone_migrator(&POSTGRES_MIGRATIONS),
        };
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&self.pool).await.map_err(Into::into)
    }
}

/// A connection error that says where it tried: "connecting to 127.0.0.1:5432: Connection
/// refused" rather than the driver's bare "error communicating with database".
fn unreachable_database(backend: Backend, url: &str, error: sqlx::Error) -> sqlx::Error {
    let place = match backend {
        Backend::Postgres => match PgConnectOptions::from_str(url) {
            Ok(options) => format!("{}:{}", options.get_host(), options.get_port()),
            Err(_) => "the database".into(),
        },
        Backend::Sqlite => match SqliteConnectOptions::from_str(url) {
            Ok(options) => options.get_filename().display().to_string(),
            Err(_) => "the database".into(),
        },
    };
    match error {
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(
            io.kind(),
            format!("connecting to {place}: {io}"),
        )),
        sqlx::Error::Tls(tls) => sqlx::Error::Tls(format!("connecting to {place}: {tls}").into()),
        // The server answered: its own message says what is wrong.
        other => other,
    }
}

fn clone_migrator(source: &Migrator) -> Migrator {
    Migrator::with_migrations(source.iter().cloned().collect())
}

/// `sqlite://data/switchyard.db?mode=rwc` creates the file but not its folder, and with
/// the process's umask (often readable by everyone). The file is created here first,
/// readable by its owner only; SQLite gives its WAL and shared-memory files the database
/// file's permissions.
fn create_sqlite_file(url: &str) -> Result<(), sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?;
    let path = Path::new(options.get_filename());
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Ok(());
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(path)?;
    Ok(())
}

/// Something built once per backend, on first use: statements whose SQL differs between the
/// backends (a time's cast, see [`crate::timestamp`]), kept in a `static` so that a hot path
/// neither formats its SQL per call nor keeps a twin statement per backend.
pub struct PerBackend<T> {
    build: fn(Backend) -> T,
    sqlite: OnceLock<T>,
    postgres: OnceLock<T>,
}

impl<T> PerBackend<T> {
    pub const fn new(build: fn(Backend) -> T) -> Self {
        Self {
            build,
            sqlite: OnceLock::new(),
            postgres: OnceLock::new(),
        }
    }

    pub fn get(&self, backend: Backend) -> &T {
        let built = match backend {
            Backend::Sqlite => &self.sqlite,
            Backend::Postgres => &self.postgres,
        };
        built.get_or_init(|| (self.build)(backend))
    }
}

/// Parameters one multi-row statement binds at most; both backends allow more (SQLite
/// 32,766, PostgreSQL 65,535), and statements this size already amortise their overhead.
pub const MAX_PARAMETERS: usize = 4_096;

impl Backend {
    /// The backend behind an open connection.
    pub fn of(conn: &sqlx::AnyConnection) -> Self {
        match conn.backend_name() {
            "PostgreSQL" => Self::Postgres,
            _ => Self::Sqlite,
        }
    }

    /// Appends the bind parameter at 1-based `position`. SQLite gets anonymous `?`: it
    /// looks each named parameter (`$N`) up with a linear scan when binding, which made
    /// binding a 10,000-parameter statement take longer than running it.
    fn push_placeholder(self, sql: &mut String, position: usize) {
        match self {
            Self::Sqlite => sql.push('?'),
            Self::Postgres => write!(sql, "${position}").expect("writing to a String succeeds"),
        }
    }

    /// Placeholders for an `IN (…)` list of `count` values, each followed by `cast`.
    pub fn placeholders(self, count: usize, cast: &str) -> String {
        let mut list = String::with_capacity(count * (cast.len() + 8));
        for position in 1..=count {
            if position > 1 {
                list.push_str(", ");
            }
            self.push_placeholder(&mut list, position);
            list.push_str(cast);
        }
        list
    }

    /// `($1, $2::json), ($3, $4::json), …` for a multi-row INSERT of `rows` rows, with a
    /// column's cast after each of its placeholders.
    pub fn values_clause(self, rows: usize, casts: &[&str]) -> String {
        let mut clause = String::with_capacity(rows * casts.len() * 8);
        for row in 0..rows {
            clause.push_str(if row == 0 { "(" } else { ", (" });
            for (column, cast) in casts.iter().enumerate() {
                if column > 0 {
                    clause.push_str(", ");
                }
                self.push_placeholder(&mut clause, row * casts.len() + column + 1);
                clause.push_str(cast);
            }
            clause.push(')');
        }
        clause
    }
}

#[cfg(test)]
mod tests {
    use super::Backend;

    #[test]
    fn values_clause_numbers_placeholders_row_by_row() {
        assert_eq!(
            Backend::Postgres.values_clause(2, &["", "::json"]),
            "($1, $2::json), ($3, $4::json)"
        );
        assert_eq!(
            Backend::Sqlite.values_clause(2, &["", ""]),
            "(?, ?), (?, ?)"
        );
    }

    #[test]
    fn placeholders_list_one_per_value() {
        assert_eq!(
            Backend::Postgres.placeholders(3, "::uuid"),
            "$1::uuid, $2::uuid, $3::uuid"
        );
        assert_eq!(Backend::Sqlite.placeholders(2, ""), "?, ?");
    }
}

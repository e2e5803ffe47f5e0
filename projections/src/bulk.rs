//! Multi-row writes: a projection folds a whole batch in memory into the rows it writes
//! ([`Rows`]), then writes each table in one or a few statements instead of one per event.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{Any, AnyConnection, any::AnyArguments};
use switchyard_command::{Backend, db::MAX_PARAMETERS, timestamp};

/// One bound value.
pub enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    /// Kept as the backend keeps times ([`timestamp`]).
    Time(Option<DateTime<Utc>>),
}

impl From<DateTime<Utc>> for Param {
    fn from(value: DateTime<Utc>) -> Self {
        Self::Time(Some(value))
    }
}

impl From<String> for Param {
    fn from(value: String) -> Self {
        Self::Text(Some(value))
    }
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Self::Text(Some(value.to_owned()))
    }
}

impl From<Option<String>> for Param {
    fn from(value: Option<String>) -> Self {
        Self::Text(value)
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Self::Int(Some(value))
    }
}

impl From<Option<i64>> for Param {
    fn from(value: Option<i64>) -> Self {
        Self::Int(value)
    }
}

/// Rows for one table: `{insert} VALUES … {on_conflict}`, where `insert` is
/// `INSERT INTO table (columns…)` and every row has a value for each column.
pub struct Rows {
    pub insert: &'static str,
    pub on_conflict: &'static str,
    pub rows: Vec<Vec<Param>>,
}

/// A statement with its values bound, ready to run.
pub type Statement = sqlx::query::Query<'static, Any, AnyArguments>;

impl Rows {
    /// The statements that write these rows on `backend`: `VALUES (…), (…)` lists, as few
    /// as the parameter limit allows. Binding copies every value, so a rebuild binds while
    /// planning, off the writer's path.
    pub fn statements(self, backend: Backend) -> Vec<Statement> {
        let on_conflict = self.on_conflict;
        self.bind(backend, on_conflict)
    }

    /// [`Rows::statements`] for rows that cannot meet one already in their table: a
    /// rebuild's per-event rows, which go once each into emptied tables. Without `ON
    /// CONFLICT`, PostgreSQL inserts a row plainly instead of speculatively: 104k audit
    /// entries took 535 ms instead of 940 ms.
    pub fn new_row_statements(self, backend: Backend) -> Vec<Statement> {
        self.bind(backend, "")
    }

    fn bind(self, backend: Backend, on_conflict: &str) -> Vec<Statement> {
        let Some(first) = self.rows.first() else {
            return vec![];
        };
        let columns = first.len();
        // Every row has the same kind of value in a column.
        let casts: Vec<&str> = first
            .iter()
            .map(|param| match param {
                Param::Time(_) => timestamp::cast(backend),
                Param::Text(_) | Param::Int(_) => "",
            })
            .collect();
        let mut rows = self.rows.into_iter().peekable();
        let mut statements = vec![];
        // Every chunk but the last has the same number of rows, so they share one SQL text:
        // formatting thousands of placeholders per statement was 6% of a rebuild's CPU.
        let mut shared_sql: Option<(usize, Arc<str>)> = None;
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Param>> = rows.by_ref().take(MAX_PARAMETERS / columns).collect();
            let sql = match &shared_sql {
                Some((rows, sql)) if *rows == chunk.len() => sql.clone(),
                _ => {
                    let values = backend.values_clause(chunk.len(), &casts);
                    let sql: Arc<str> =
                        format!("{} VALUES {values} {on_conflict}", self.insert).into();
                    shared_sql.insert((chunk.len(), sql)).1.clone()
                }
            };
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for param in chunk.into_iter().flatten() {
                query = match param {
                    Param::Text(text) => query.bind(text),
                    Param::Int(int) => query.bind(int),
                    Param::Time(at) => query.bind(at.map(timestamp::format)),
                };
            }
            statements.push(query);
        }
        statements
    }
}

/// Writes every table's rows, in order.
pub async fn write_all(conn: &mut AnyConnection, tables: Vec<Rows>) -> Result<(), sqlx::Error> {
    let backend = Backend::of(conn);
    let statements = tables
        .into_iter()
        .flat_map(|rows| rows.statements(backend))
        .collect();
    execute_all(conn, statements).await
}

/// Runs bound statements, in order.
pub async fn execute_all(
    conn: &mut AnyConnection,
    statements: Vec<Statement>,
) -> Result<(), sqlx::Error> {
    for statement in statements {
        statement.execute(&mut *conn).await?;
    }
    Ok(())
}

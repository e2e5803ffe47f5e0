//! Multi-row writes: a projection folds a whole batch in memory and writes it in a few
//! statements, instead of a statement per event.

use sqlx::AnyConnection;
use switchyard_command::{Backend, db::MAX_PARAMETERS};

/// One bound value.
pub(crate) enum Param {
    Text(Option<String>),
    Int(i64),
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
        Self::Int(value)
    }
}

/// Runs `{insert} VALUES (…), (…) {on_conflict}` over `rows`, in as few statements as the
/// parameter limit allows. Every row must have `columns` values.
pub(crate) async fn insert_rows(
    conn: &mut AnyConnection,
    insert: &str,
    on_conflict: &str,
    columns: usize,
    rows: Vec<Vec<Param>>,
) -> Result<(), sqlx::Error> {
    let casts = vec![""; columns];
    let backend = Backend::of(conn);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Param>> = rows.by_ref().take(MAX_PARAMETERS / columns).collect();
        let sql = format!(
            "{insert} VALUES {} {on_conflict}",
            backend.values_clause(chunk.len(), &casts)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for param in chunk.into_iter().flatten() {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(int),
            };
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

//! Settings shared by every subcommand, from flags or the environment.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// Database URL: `sqlite://…` (embedded, the default) or `postgres://…`.
    /// Default: an SQLite file in the data folder.
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Folder for local state: the SQLite database (and, later, keys).
    #[arg(
        long,
        env = "SWITCHYARD_DATA_DIR",
        default_value = "data",
        global = true
    )]
    pub data_dir: PathBuf,
}

impl DatabaseSettings {
    pub fn url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("switchyard.db").display()
            )
        })
    }
}

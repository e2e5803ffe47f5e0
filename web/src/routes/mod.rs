pub mod audit;
pub mod channels;
pub mod config;
pub mod groups;
pub mod me;
pub mod service;
pub mod sessions;
pub mod users;

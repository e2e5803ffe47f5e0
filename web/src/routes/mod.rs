pub mod audit;
pub mod config;
pub mod service;
pub mod sessions;

//! Side effects: sending email and SMS through an account's channels, verifying its payment
//! gateways, and the jobs that do it after the events that ask for it. Only this crate talks
//! to SMTP servers, SMS gateways and payment providers, and only through [`outbound`].
pub mod gateways;
pub mod jobs;
pub mod outbound;
pub mod sms;
pub mod smtp;

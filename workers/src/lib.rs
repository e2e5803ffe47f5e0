//! Side effects: sending email and SMS through an account's channels, and the jobs that do
//! it after the events that ask for it. Only this crate talks to SMTP servers and SMS
//! gateways, and only through [`outbound`].
pub mod jobs;
pub mod outbound;
pub mod sms;
pub mod smtp;

//! Background workers for side effects (SMTP and SMS tests, login alerts, package renewals,
//! server refreshes). Empty until the workers issue: nothing in the service has a side effect
//! outside its database yet.
pub mod sms;
pub mod smtp;

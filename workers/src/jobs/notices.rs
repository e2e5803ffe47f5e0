//! The words of the emails the product sends on its own: the test email, login alerts,
//! security notices and low-balance alerts.

use switchyard_command::domain::Money;

use crate::smtp::Message;

use super::job::{NoticeContext, SecurityChange};

pub fn test_email(to: &str) -> Message {
    Message {
        to: to.to_owned(),
        subject: "Switchyard test email".into(),
        text_body: "This is a test email from Switchyard.\n\n\
                    It was sent with your account's SMTP settings, the way every email of \
                    your account is sent. If you can read it, those settings work.\n"
            .into(),
    }
}

pub const TEST_SMS: &str = "Switchyard test message: your account's SMS settings work.";

pub fn login_alert(to: &str, context: &NoticeContext) -> Message {
    Message {
        to: to.to_owned(),
        subject: "New login to your account".into(),
        text_body: format!(
            "Hello {name},\n\n\
             Someone logged in to your account {to}.\n\n\
             {details}\n\
             If this was you, there is nothing to do.\n\
             If it was not you, change your password now, turn on two-factor login, \
             and tell your administrator.\n",
            name = context.name,
            details = details(context),
        ),
    }
}

pub fn low_balance_alert(to: &str, name: &str, available: &Money, threshold: &Money) -> Message {
    Message {
        to: to.to_owned(),
        subject: "Your account's balance is running low".into(),
        text_body: format!(
            "Hello {name},\n\n\
             The available balance of your account is {available}, below the alert \
             threshold of {threshold}.\n\n\
             Renewals and usage stop being charged once nothing is available: make a \
             payment to top the balance up. You are told again the next time it falls \
             below the threshold after rising above it.\n"
        ),
    }
}

pub fn security_notice(to: &str, change: &SecurityChange, context: &NoticeContext) -> Message {
    let (subject, what) = match change {
        SecurityChange::PasswordChanged => (
            "Your password was changed",
            "The password of your account was changed.".to_owned(),
        ),
        SecurityChange::EmailChanged { new_email } => (
            "Your email address was changed",
            format!(
                "The email address of your account was changed to {new_email}. \
                 This is the last email sent to this address."
            ),
        ),
        SecurityChange::TotpEnabled => (
            "Two-factor login was turned on",
            "Two-factor login was turned on for your account.".to_owned(),
        ),
        SecurityChange::TotpDisabled => (
            "Two-factor login was turned off",
            "Two-factor login was turned off for your account.".to_owned(),
        ),
        SecurityChange::TotpReset => (
            "Two-factor login was reset by an administrator",
            "An administrator turned off two-factor login for your account. \
             Set it up again from My Account."
                .to_owned(),
        ),
    };
    Message {
        to: to.to_owned(),
        subject: subject.into(),
        text_body: format!(
            "Hello {name},\n\n\
             {what}\n\n\
             {details}\n\
             If you made this change, there is nothing to do.\n\
             If you did not, tell your administrator now: someone else may be able to \
             log in as you.\n",
            name = context.name,
            details = details(context),
        ),
    }
}

/// When and from where, the time in the account's date format.
fn details(context: &NoticeContext) -> String {
    let unknown = "unknown".to_owned();
    format!(
        "When: {when}\nIP address: {ip}\nBrowser or app: {agent}\n",
        when = context
            .at
            .format(&format!("{} %H:%M:%S UTC", context.date_format.strftime())),
        ip = context.ip.as_ref().unwrap_or(&unknown),
        agent = context.user_agent.as_ref().unwrap_or(&unknown),
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use switchyard_command::domain::DateFormat;

    use super::*;

    #[test]
    fn a_login_alert_tells_when_in_the_account_format_and_from_where() {
        let context = NoticeContext {
            name: "Ada".into(),
            at: chrono::Utc.with_ymd_and_hms(2026, 11, 27, 9, 5, 7).unwrap(),
            date_format: DateFormat::DayDotMonthYear,
            ip: Some("203.0.113.9".into()),
            user_agent: None,
        };
        let message = login_alert("ada@example.com", &context);
        assert_eq!(message.to, "ada@example.com");
        assert!(
            message.text_body.contains("Hello Ada,"),
            "{}",
            message.text_body
        );
        assert!(message.text_body.contains("When: 27.11.2026 09:05:07 UTC"));
        assert!(message.text_body.contains("IP address: 203.0.113.9"));
        assert!(message.text_body.contains("Browser or app: unknown"));
    }
}

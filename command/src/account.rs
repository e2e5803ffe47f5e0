//! The `Account` aggregate: a tenant's company and general configuration.

use serde::{Deserialize, Serialize};

use crate::{
    domain::{CountryCode, CurrencyCode, DateFormat, EmailAddress, PhoneNumber, Text},
    event_log::EventCodec,
    handler::{Aggregate, Inconsistent},
    seen::{SeenVersion, Stale, check_seen},
};

/// The company information screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyInformation {
    pub name: Text,
    pub email: EmailAddress,
    pub company: Text,
    pub address_line1: Text,
    pub address_line2: Text,
    pub country: Option<CountryCode>,
    pub city: Text,
    pub post_code: Text,
}

impl CompanyInformation {
    /// What a new account starts with: its name and its administrator's email.
    pub fn initial(name: Text, email: EmailAddress) -> Self {
        let empty = Text::parse("", 0, 0).expect("empty text is valid");
        Self {
            name,
            email,
            company: empty.clone(),
            address_line1: empty.clone(),
            address_line2: empty.clone(),
            country: None,
            city: empty.clone(),
            post_code: empty,
        }
    }
}

/// The general information screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneralInformation {
    pub currency: CurrencyCode,
    pub date_format: DateFormat,
    pub phone: Option<PhoneNumber>,
    pub mobile: Option<PhoneNumber>,
    /// The tutorial's "security add-on": email the user at every login.
    pub login_alerts: bool,
}

impl Default for GeneralInformation {
    fn default() -> Self {
        Self {
            currency: CurrencyCode::DEFAULT,
            date_format: DateFormat::YearMonthDay,
            phone: None,
            mobile: None,
            login_alerts: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    AccountOpened {
        company: CompanyInformation,
        general: GeneralInformation,
    },
    CompanyInformationChanged(CompanyInformation),
    GeneralInformationChanged(GeneralInformation),
}

impl EventCodec for AccountEvent {
    const STREAM_TYPE: &'static str = "account";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    Open {
        company: CompanyInformation,
        general: GeneralInformation,
    },
    ChangeCompanyInformation(CompanyInformation, SeenVersion),
    ChangeGeneralInformation(GeneralInformation, SeenVersion),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account does not exist")]
    NotFound,
    #[error("the account already exists")]
    AlreadyOpened,
    #[error("the section changed since version {seen}; it is at version {current}")]
    SectionChanged { seen: i64, current: i64 },
}

impl From<Stale> for AccountError {
    fn from(Stale { seen, current }: Stale) -> Self {
        Self::SectionChanged { seen, current }
    }
}

/// A configuration section with the stream version of the event that last set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub sections: Option<(Versioned<CompanyInformation>, Versioned<GeneralInformation>)>,
}

impl Account {
    fn opened(
        &self,
    ) -> Result<&(Versioned<CompanyInformation>, Versioned<GeneralInformation>), AccountError> {
        self.sections.as_ref().ok_or(AccountError::NotFound)
    }
}

/// Decides a section change: nothing when nothing changes, a conflict when stale.
fn change<T: PartialEq>(
    current: &Versioned<T>,
    new: T,
    seen: SeenVersion,
    event: impl FnOnce(T) -> AccountEvent,
) -> Result<Vec<AccountEvent>, AccountError> {
    check_seen(seen, current.version)?;
    Ok(if current.value == new {
        Vec::new()
    } else {
        vec![event(new)]
    })
}

impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn decide(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { company, general } => match self.sections {
                Some(_) => Err(AccountError::AlreadyOpened),
                None => Ok(vec![AccountEvent::AccountOpened { company, general }]),
            },
            AccountCommand::ChangeCompanyInformation(company, seen) => change(
                &self.opened()?.0,
                company,
                seen,
                AccountEvent::CompanyInformationChanged,
            ),
            AccountCommand::ChangeGeneralInformation(general, seen) => change(
                &self.opened()?.1,
                general,
                seen,
                AccountEvent::GeneralInformationChanged,
            ),
        }
    }

    fn evolve(&mut self, event: AccountEvent, version: i64) -> Result<(), Inconsistent> {
        match (event, &mut self.sections) {
            (AccountEvent::AccountOpened { company, general }, sections) => {
                *sections = Some((
                    Versioned {
                        value: company,
                        version,
                    },
                    Versioned {
                        value: general,
                        version,
                    },
                ));
            }
            (AccountEvent::CompanyInformationChanged(value), Some((company, _))) => {
                *company = Versioned { value, version };
            }
            (AccountEvent::GeneralInformationChanged(value), Some((_, general))) => {
                *general = Versioned { value, version };
            }
            (_, None) => return Err(Inconsistent("a section change before the account opened")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::testing::given;

    fn company(name: &str) -> CompanyInformation {
        CompanyInformation::initial(
            Text::parse(name, 1, 100).unwrap(),
            EmailAddress::parse("ops@example.com").unwrap(),
        )
    }

    fn opened() -> AccountEvent {
        AccountEvent::AccountOpened {
            company: company("Acme"),
            general: GeneralInformation::default(),
        }
    }

    #[test]
    fn opens_once() {
        let open = AccountCommand::Open {
            company: company("Acme"),
            general: GeneralInformation::default(),
        };
        given::<Account>(vec![])
            .when(open.clone())
            .then(vec![opened()]);
        given::<Account>(vec![opened()])
            .when(open)
            .then_error(AccountError::AlreadyOpened);
    }

    #[test]
    fn changing_company_information_records_the_new_value() {
        given::<Account>(vec![opened()])
            .when(AccountCommand::ChangeCompanyInformation(
                company("Acme Ltd"),
                None,
            ))
            .then(vec![AccountEvent::CompanyInformationChanged(company(
                "Acme Ltd",
            ))]);
    }

    #[test]
    fn a_change_that_changes_nothing_records_nothing() {
        given::<Account>(vec![opened()])
            .when(AccountCommand::ChangeCompanyInformation(
                company("Acme"),
                Some(1),
            ))
            .then(vec![]);
        given::<Account>(vec![opened()])
            .when(AccountCommand::ChangeGeneralInformation(
                GeneralInformation::default(),
                None,
            ))
            .then(vec![]);
    }

    #[test]
    fn a_stale_seen_version_is_refused() {
        let renamed = AccountEvent::CompanyInformationChanged(company("Acme Ltd"));
        given::<Account>(vec![opened(), renamed])
            .when(AccountCommand::ChangeCompanyInformation(
                company("Other"),
                Some(1),
            ))
            .then_error(AccountError::SectionChanged {
                seen: 1,
                current: 2,
            });
    }

    #[test]
    fn sections_are_versioned_independently() {
        let renamed = AccountEvent::CompanyInformationChanged(company("Acme Ltd"));
        let general = GeneralInformation {
            login_alerts: true,
            ..GeneralInformation::default()
        };
        // The company changed at version 2, but general information is still at 1.
        given::<Account>(vec![opened(), renamed])
            .when(AccountCommand::ChangeGeneralInformation(
                general.clone(),
                Some(1),
            ))
            .then(vec![AccountEvent::GeneralInformationChanged(general)]);
    }

    #[test]
    fn changes_need_an_account() {
        given::<Account>(vec![])
            .when(AccountCommand::ChangeCompanyInformation(
                company("Acme"),
                None,
            ))
            .then_error(AccountError::NotFound);
    }
}

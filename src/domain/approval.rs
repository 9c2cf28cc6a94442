//! Who may approve a change: the separation of author and approver.
//!
//! A change's author is the pull/merge request's author (their forge login) when the
//! change came through one, else the deployed commit's author (their e-mail). With
//! `[approval] separate_author = true` (the default) nobody approves their own change: an
//! approver who is the author is refused, and so is any approval of a change whose author
//! is not known, since the rule cannot then be checked (it fails closed). The same holds
//! for an approval an ITSM reports back ([`itsm_approval_counts`]): it counts only when
//! someone other than the author gave it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Who made a change, as the pipeline could tell: the pull/merge request's author (a
/// forge login), else the deployed commit's author (an e-mail, and their forge login when
/// the platform names it, as a GitHub push does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl Author {
    /// A pull/merge request's author.
    pub fn login(login: &str) -> Author {
        Author {
            login: Some(login.trim().to_string()).filter(|l| !l.is_empty()),
            email: None,
        }
    }

    /// A commit's author.
    pub fn email(email: &str) -> Author {
        Author {
            login: None,
            email: Some(email.trim().to_string()).filter(|e| !e.is_empty()),
        }
    }

    /// Whether nothing is known of the author.
    pub fn is_unknown(&self) -> bool {
        self.login.is_none() && self.email.is_none()
    }

    /// Whether `who` (an approver's login, e-mail or `Name <e-mail>`) names this author.
    /// Logins and e-mail addresses are compared without regard to case, as forges and mail
    /// systems treat them; an e-mail is matched in `Name <e-mail>` too.
    pub fn is(&self, who: &str) -> bool {
        let who = who.trim();
        if who.is_empty() {
            return false;
        }
        let login = self
            .login
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(who));
        let email = self.email.as_deref().is_some_and(|e| {
            e.eq_ignore_ascii_case(who) || email_in(who).is_some_and(|w| w.eq_ignore_ascii_case(e))
        });
        login || email
    }
}

/// The e-mail of `Name <e-mail>` (as git and GitLab's `CI_COMMIT_AUTHOR` write it).
pub fn email_in(text: &str) -> Option<&str> {
    let start = text.rfind('<')?;
    let end = text[start..].find('>')? + start;
    Some(text[start + 1..end].trim()).filter(|e| !e.is_empty())
}

impl fmt::Display for Author {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.login, &self.email) {
            (Some(login), Some(email)) => write!(f, "@{login} <{email}>"),
            (Some(login), None) => write!(f, "@{login}"),
            (None, Some(email)) => f.write_str(email),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// Why an approval is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The approver is the change's author.
    #[error(
        "{approver} is the author of change {change} ({author}), and an author may not approve their own change ([approval] separate_author = true): another person must approve it"
    )]
    Author {
        change: String,
        approver: String,
        author: Author,
    },
    /// The change's author is not known, so the rule cannot be checked.
    #[error(
        "the author of change {change} is not known (no pull request author and no commit author e-mail was recorded), so changegate cannot tell that {approver} is not approving their own change ([approval] separate_author = true): decide it where the author is known, or set [approval] separate_author = false"
    )]
    AuthorUnknown { change: String, approver: String },
}

/// Whether the approvers may approve `change`, made by `author`: `approvers` are every name
/// the person approving goes by (the `--by` name, and the CI user who started the job).
/// With `separate_author`, none of them may be the author, and the author must be known.
pub fn may_approve(
    change: &str,
    author: Option<&Author>,
    approvers: &[&str],
    separate_author: bool,
) -> Result<(), Refused> {
    if !separate_author {
        return Ok(());
    }
    let approver = approvers
        .iter()
        .map(|a| a.trim())
        .find(|a| !a.is_empty())
        .unwrap_or_default()
        .to_string();
    let Some(author) = author.filter(|a| !a.is_unknown()) else {
        return Err(Refused::AuthorUnknown {
            change: change.to_string(),
            approver,
        });
    };
    match approvers.iter().find(|who| author.is(who)) {
        Some(who) => Err(Refused::Author {
            change: change.to_string(),
            approver: who.trim().to_string(),
            author: author.clone(),
        }),
        None => Ok(()),
    }
}

/// Someone an ITSM reports as having approved a change, by every name it gives them (a
/// display name, a user name, an e-mail address): the author is matched against each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approver {
    pub names: Vec<String>,
}

impl Approver {
    /// An approver known by `names`; blank names are dropped.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Approver {
        Approver {
            names: names
                .iter()
                .map(|n| n.as_ref().trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// Whether any of the approver's names is the author's login or e-mail.
    pub fn is(&self, author: &Author) -> bool {
        self.names.iter().any(|n| author.is(n))
    }
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.names.split_first() {
            None => f.write_str("an unnamed approver"),
            Some((first, [])) => f.write_str(first),
            Some((first, rest)) => write!(f, "{first} ({})", rest.join(", ")),
        }
    }
}

/// Why an approval an ITSM reported back does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCounted {
    /// Everyone who approved is the change's author.
    #[error(
        "{change} was approved in {itsm} only by its author {author} (approved by {approvers}), and an author may not approve their own change ([approval] separate_author = true): the approval does not count and the deploy does not go ahead; another person must approve {change} in {itsm}"
    )]
    ByAuthor {
        change: String,
        itsm: String,
        author: Author,
        approvers: String,
    },
    /// The ITSM names nobody as having approved, so the rule cannot be checked.
    #[error(
        "{change} is approved in {itsm}, but {itsm} names nobody who approved it, so changegate cannot tell that its author {author} did not approve their own change ([approval] separate_author = true): the approval does not count; have a person other than the author approve it in {itsm} (the integration user needs read access to the approvals), or set [approval] separate_author = false"
    )]
    ApproverUnknown {
        change: String,
        itsm: String,
        author: Author,
    },
    /// The change's author is not known, so the rule cannot be checked.
    #[error(
        "{change} is approved in {itsm}, but its author is not known (no pull request author and no commit author e-mail), so changegate cannot tell that the approver is not its author ([approval] separate_author = true): the approval does not count; run the gate where the author is known, or set [approval] separate_author = false"
    )]
    AuthorUnknown { change: String, itsm: String },
}

/// Whether an approval the ITSM `itsm` reported back for `change`, made by `author`, counts:
/// `approvers` are everyone it names as having approved. With `separate_author` someone
/// other than the author must be among them, and both sides must be known (fails closed).
pub fn itsm_approval_counts(
    change: &str,
    itsm: &str,
    author: Option<&Author>,
    approvers: &[Approver],
    separate_author: bool,
) -> Result<(), NotCounted> {
    if !separate_author {
        return Ok(());
    }
    let Some(author) = author.filter(|a| !a.is_unknown()) else {
        return Err(NotCounted::AuthorUnknown {
            change: change.to_string(),
            itsm: itsm.to_string(),
        });
    };
    let named: Vec<&Approver> = approvers.iter().filter(|a| !a.names.is_empty()).collect();
    if named.is_empty() {
        return Err(NotCounted::ApproverUnknown {
            change: change.to_string(),
            itsm: itsm.to_string(),
            author: author.clone(),
        });
    }
    if named.iter().all(|a| a.is(author)) {
        return Err(NotCounted::ByAuthor {
            change: change.to_string(),
            itsm: itsm.to_string(),
            author: author.clone(),
            approvers: named
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    Ok(())
}

/// Who may approve a change made by `author`, in words for a waiting gate's lines.
pub fn who_may_approve(author: Option<&Author>, separate_author: bool) -> String {
    match (separate_author, author) {
        (false, _) => "anyone allowed to run changegate approve".to_string(),
        (true, Some(author)) => format!("anyone but its author {author}"),
        (true, None) => {
            "nobody through changegate: its author is not known, and [approval] separate_author = true"
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(s: &str) -> Author {
        Author::login(s)
    }
    fn email(s: &str) -> Author {
        Author::email(s)
    }

    #[test]
    fn an_author_is_matched_by_login_or_email_without_regard_to_case() {
        let cases: &[(Author, &str, bool)] = &[
            (login("octocat"), "octocat", true),
            (login("octocat"), "OctoCat", true),
            (login("octocat"), " octocat ", true),
            (login("octocat"), "octocat2", false),
            (login("octocat"), "octocat@github.com", false),
            (email("dev@example.com"), "DEV@example.com", true),
            (email("dev@example.com"), "Dev One <dev@example.com>", true),
            (email("dev@example.com"), "Dev One <dev@example.org>", false),
            (email("dev@example.com"), "dev", false),
            (email(""), "", false),
            (login("a"), "", false),
            (
                Author {
                    login: Some("Codertocat".into()),
                    email: Some("21031067+Codertocat@users.noreply.github.com".into()),
                },
                "codertocat",
                true,
            ),
        ];
        for (author, who, want) in cases {
            assert_eq!(author.is(who), *want, "{author:?} is {who:?}");
        }
    }

    #[test]
    fn with_separate_author_the_author_may_not_approve() {
        let author = login("octocat");
        let refused = may_approve("CG-3", Some(&author), &["octocat"], true).unwrap_err();
        assert_eq!(
            refused,
            Refused::Author {
                change: "CG-3".into(),
                approver: "octocat".into(),
                author: author.clone()
            }
        );
        let text = refused.to_string();
        assert!(
            text.contains("octocat is the author of change CG-3 (@octocat)"),
            "{text}"
        );
        assert!(text.contains("separate_author = true"), "{text}");
        // The CI user who started the job counts as an approver too.
        assert!(may_approve("CG-3", Some(&author), &["someone", "OCTOCAT"], true).is_err());
        assert_eq!(
            may_approve("CG-3", Some(&author), &["hubot", "hubot"], true),
            Ok(())
        );
        // A rejection is never refused: only approving is; switched off, anyone approves.
        assert_eq!(
            may_approve("CG-3", Some(&author), &["octocat"], false),
            Ok(())
        );
    }

    #[test]
    fn an_unknown_author_fails_closed() {
        let refused = may_approve("CG-4", None, &["alice"], true).unwrap_err();
        assert!(matches!(refused, Refused::AuthorUnknown { .. }));
        assert!(refused.to_string().contains("separate_author = false"));
        let blank = email("  ");
        assert!(may_approve("CG-4", Some(&blank), &["alice"], true).is_err());
        assert_eq!(may_approve("CG-4", None, &["alice"], false), Ok(()));
    }

    #[test]
    fn an_itsm_approval_by_the_author_does_not_count() {
        let author = Author {
            login: Some("octocat".into()),
            email: Some("dev@example.com".into()),
        };
        let a = |names: &[&str]| Approver::new(names);
        let counts = |approvers: &[Approver], separate: bool| {
            itsm_approval_counts("CHG1", "servicenow", Some(&author), approvers, separate)
        };
        // Matched by e-mail (ServiceNow's sys_user, Jira's emailAddress) or user name.
        let by_author = counts(&[a(&["Dev One", "dev", "DEV@example.com"])], true).unwrap_err();
        assert!(matches!(by_author, NotCounted::ByAuthor { .. }));
        let text = by_author.to_string();
        assert!(
            text.contains("CHG1 was approved in servicenow only by its author @octocat <dev@example.com> (approved by Dev One (dev, DEV@example.com))"),
            "{text}"
        );
        assert!(text.contains("separate_author = true"), "{text}");
        assert!(counts(&[a(&["Octo Cat", "OctoCat"])], true).is_err());
        // Someone else approved (alone, or beside the author): it counts.
        assert_eq!(
            counts(&[a(&["Jane Approver", "jane@example.com"])], true),
            Ok(())
        );
        assert_eq!(
            counts(&[a(&["dev@example.com"]), a(&["Jane Approver"])], true),
            Ok(())
        );
        // Nobody named, or only blank names: the rule cannot be checked.
        assert!(matches!(
            counts(&[], true),
            Err(NotCounted::ApproverUnknown { .. })
        ));
        assert!(matches!(
            counts(&[a(&[" ", ""])], true),
            Err(NotCounted::ApproverUnknown { .. })
        ));
        // Switched off, any approval counts.
        assert_eq!(counts(&[a(&["dev@example.com"])], false), Ok(()));
        assert_eq!(counts(&[], false), Ok(()));
        // An unknown author fails closed.
        let unknown = itsm_approval_counts("CHG1", "jira", None, &[a(&["Jane"])], true);
        assert!(matches!(unknown, Err(NotCounted::AuthorUnknown { .. })));
        let blank = Author::default();
        assert!(itsm_approval_counts("CHG1", "jira", Some(&blank), &[a(&["Jane"])], true).is_err());
    }

    #[test]
    fn who_may_approve_in_words() {
        assert_eq!(
            who_may_approve(Some(&email("dev@example.com")), true),
            "anyone but its author dev@example.com"
        );
        assert_eq!(
            who_may_approve(Some(&login("octocat")), true),
            "anyone but its author @octocat"
        );
        assert!(who_may_approve(None, true).starts_with("nobody"));
        assert!(who_may_approve(None, false).starts_with("anyone"));
    }
}

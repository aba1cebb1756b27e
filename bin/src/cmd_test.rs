//! `zferry test ...`: diagnostics that run one piece of zferry on the user's input and show
//! what it makes of it, without touching any pool.

use std::process::ExitCode;

use zferry_core::resume_token::{ResumeToken, ResumeTokenContents};

/// `zferry test` and its subcommands.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: TestCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TestCommand {
    /// Decode a resume token (the `receive_resume_token` property) and print what it contains,
    /// like `zfs send -nvt`, without needing ZFS.
    #[command(name = "decoderesumetoken")]
    DecodeResumeToken(DecodeResumeTokenArgs),
}

#[derive(Debug, clap::Args)]
struct DecodeResumeTokenArgs {
    /// The token, as `zfs get -H -o value receive_resume_token <fs>` prints it.
    #[arg(long, value_name = "TOKEN")]
    token: String,
    /// Print a JSON object instead of `key = value` lines.
    #[arg(long)]
    json: bool,
}

/// Runs `zferry test ...`.
pub(crate) fn run(args: Args) -> ExitCode {
    match args.command {
        TestCommand::DecodeResumeToken(args) => decode_resume_token(&args),
    }
}

fn decode_resume_token(args: &DecodeResumeTokenArgs) -> ExitCode {
    match ResumeToken::decode(&args.token) {
        Ok(token) => {
            let out = if args.json {
                render_json(token.contents())
            } else {
                render_human(token.contents())
            };
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zferry: the resume token given with --token is not valid: {e}");
            ExitCode::from(2)
        }
    }
}

/// One `key = value` line per field, in the order and number format of `zfs send -nvt`
/// (numbers in `0x` hex), except that every field is shown: `-` for an absent `fromguid` (a
/// full send) or `bytes`, `true`/`false` for each flag.
fn render_human(c: &ResumeTokenContents) -> String {
    let hex_or_dash = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:#x}"));
    let lines = [
        ("fromguid", hex_or_dash(c.fromguid.map(|g| g.0))),
        ("object", format!("{:#x}", c.object)),
        ("offset", format!("{:#x}", c.offset)),
        ("bytes", hex_or_dash(c.bytes)),
        ("toguid", format!("{:#x}", c.toguid.0)),
        ("toname", c.toname.to_string()),
        ("rawok", c.rawok.to_string()),
        ("compressok", c.compressok.to_string()),
        ("embedok", c.embedok.to_string()),
        ("largeblockok", c.largeblockok.to_string()),
        ("savedok", c.savedok.to_string()),
    ];
    lines
        .iter()
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect()
}

/// A JSON object with the same fields; numbers (GUIDs too) are decimal JSON numbers, absent
/// values `null`.
fn render_json(c: &ResumeTokenContents) -> String {
    let value = serde_json::json!({
        "fromguid": c.fromguid.map(|g| g.0),
        "toguid": c.toguid.0,
        "toname": c.toname.to_string(),
        "filesystem": c.toname.dataset().as_str(),
        "object": c.object,
        "offset": c.offset,
        "bytes": c.bytes,
        "rawok": c.rawok,
        "compressok": c.compressok,
        "embedok": c.embedok,
        "largeblockok": c.largeblockok,
        "savedok": c.savedok,
    });
    format!("{value:#}\n")
}

#[cfg(test)]
mod tests {
    use zferry_core::name::VersionName;
    use zferry_core::version::Guid;

    use super::*;

    fn contents(fromguid: Option<u64>) -> ResumeTokenContents {
        ResumeTokenContents {
            fromguid: fromguid.map(Guid),
            toguid: Guid(0xf784_e100_4f46_0f7a),
            toname: VersionName::parse("pool/a b@s 1").unwrap(),
            object: 2,
            offset: 0x2c_0000,
            bytes: None,
            rawok: true,
            compressok: false,
            embedok: false,
            largeblockok: true,
            savedok: false,
        }
    }

    #[test]
    fn human_rendering_shows_every_field() {
        assert_eq!(
            render_human(&contents(Some(0x10))),
            "fromguid = 0x10\nobject = 0x2\noffset = 0x2c0000\nbytes = -\n\
             toguid = 0xf784e1004f460f7a\ntoname = pool/a b@s 1\nrawok = true\n\
             compressok = false\nembedok = false\nlargeblockok = true\nsavedok = false\n"
        );
        assert!(render_human(&contents(None)).starts_with("fromguid = -\n"));
    }

    #[test]
    fn json_rendering_keeps_guids_exact() {
        let text = render_json(&contents(None));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["toguid"].as_u64(), Some(0xf784_e100_4f46_0f7a));
        assert!(v["fromguid"].is_null());
        assert!(v["bytes"].is_null());
        assert_eq!(v["filesystem"], "pool/a b");
        assert_eq!(v["toname"], "pool/a b@s 1");
        assert_eq!(v["rawok"], true);
        assert!(text.contains("17835627815740247930"), "{text}");
    }
}

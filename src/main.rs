//! The `edgepull` binary: parse the command line, run it, print the error chain, exit with
//! the documented code.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// Print an error and each cause on its own line (the walk is [`edgepull::causes`]).
fn report(e: &dyn std::error::Error) {
    for (i, cause) in edgepull::causes(e).enumerate() {
        if i == 0 {
            eprintln!("error: {cause}");
        } else {
            eprintln!("  caused by: {cause}");
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&e);
            return ExitCode::from(1);
        }
    };
    // `cli::run` installs the daemon's signal handlers before it does anything else.
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            report(f.error.as_ref());
            ExitCode::from(f.category.code())
        }
    }
}

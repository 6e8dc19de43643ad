use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = llmctr::cli::Cli::parse();
    match llmctr::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

use clap::Parser as _;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = custody_server::config::Cli::parse();
    custody_server::app::init_tracing();
    match custody_server::app::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

from bbans.cli import main

main()

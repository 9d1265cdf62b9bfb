from landscape.cli.app import main

main()

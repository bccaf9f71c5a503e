from mirliton.cli import main

main()

from batchgen._entry import main

main()

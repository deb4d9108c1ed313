"""The packaged stack deployed on ministack, an AWS emulator we did not write (make test-deploy)."""

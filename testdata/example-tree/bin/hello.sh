#!/bin/sh
echo "hello from an EROFS image"

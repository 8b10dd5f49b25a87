print("cacheroute")
